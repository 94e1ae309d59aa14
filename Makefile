# ebt: `make` builds libebt.a, libebt.so and the examples; `make test` builds
# and runs every test (non-zero exit on any failure); `make asan` runs the
# tests under AddressSanitizer + UndefinedBehaviorSanitizer.
CC      ?= cc
OPT     ?= -O3 -g
# OpenMP splits the row-wise and attention kernels over threads, so a
# program linking libebt.a needs -fopenmp too (ebt.pc's Libs.private says
# so); `make OMP=` builds without it
OMP     ?= -fopenmp
STD      = -std=c99 -Wall -Wextra -Wpedantic
# no fused multiply-adds, so every vector width gives the same bits; math
# functions need not set errno (sqrt then vectorises)
FPFLAGS  = -ffp-contract=off -fno-math-errno
# the matrix-product backend: oneDNN's dnnl_sgemm (libdnnl-dev; it generates
# its kernels for the CPU it finds) or CBLAS (OpenBLAS, libopenblas-dev).
# The double-precision builds of the tests always use OpenBLAS's dgemm.
GEMM    ?= onednn
ifeq ($(GEMM),onednn)
GEMMFLAGS = -DEBT_GEMM_ONEDNN
GEMMLIBS  = -ldnnl
else ifeq ($(GEMM),cblas)
GEMMFLAGS = -DEBT_LM_OPENBLAS
GEMMLIBS  = -lopenblas
else
$(error GEMM must be onednn or cblas, not '$(GEMM)')
endif
CFLAGS  += $(STD) $(OPT) $(FPFLAGS) $(OMP) $(GEMMFLAGS)
LDLIBS   = $(GEMMLIBS) -lm
# tests also link OpenBLAS: the double builds, and test_threads sets its threads
TESTLIBS = -lcmocka $(LDLIBS) $(if $(filter onednn,$(GEMM)),-lopenblas)
BUILD   ?= build

# the version is read from ebt.h (EBT_VERSION_MAJOR/MINOR/PATCH); the shared
# library is libebt.so.MAJOR.MINOR.PATCH with SONAME libebt.so.MAJOR
ebt_version_part = $(shell sed -n 's/^\#define EBT_VERSION_$(1)  *\([0-9][0-9]*\).*/\1/p' ebt.h)
MAJOR   := $(call ebt_version_part,MAJOR)
VERSION := $(MAJOR).$(call ebt_version_part,MINOR).$(call ebt_version_part,PATCH)
SONAME   = libebt.so.$(MAJOR)
ifneq ($(words $(subst ., ,$(VERSION))),3)
$(error cannot read EBT_VERSION_MAJOR/MINOR/PATCH from ebt.h)
endif

# `make install`: PREFIX (default /usr/local) and DESTDIR (staging, for packagers)
PREFIX     ?= /usr/local
INCLUDEDIR ?= $(PREFIX)/include
LIBDIR     ?= $(PREFIX)/lib
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
INSTALL    ?= install

EXAMPLES = $(BUILD)/minimal $(BUILD)/ebt_lm
TESTS    = $(BUILD)/test_fd $(BUILD)/test_ref $(BUILD)/test_ref_double $(BUILD)/test_shapes $(BUILD)/test_leak $(BUILD)/test_ckpt $(BUILD)/test_badinput $(BUILD)/test_safetensors $(BUILD)/test_train $(BUILD)/test_train_double $(BUILD)/test_think $(BUILD)/test_think_double $(BUILD)/test_think_rules $(BUILD)/test_think_rules_double $(BUILD)/test_alloc $(BUILD)/test_threads $(BUILD)/test_savefail \
           $(BUILD)/test_optim $(BUILD)/test_optim_double $(BUILD)/test_think_opts \
           $(BUILD)/test_energy $(BUILD)/test_energy_double $(BUILD)/test_generate $(BUILD)/test_errpaths $(BUILD)/test_train_parts $(BUILD)/test_kernels

.PHONY: all test test-suite asan fuzz bench clean ref install uninstall mutate mpi pytest
all: $(BUILD)/libebt.a $(BUILD)/libebt.so $(BUILD)/$(SONAME) $(EXAMPLES)

$(BUILD):
	mkdir -p $(BUILD)

$(BUILD)/ebt.o: ebt.c ebt.h | $(BUILD)
	$(CC) $(CFLAGS) -fPIC -c ebt.c -o $@

$(BUILD)/libebt.a: $(BUILD)/ebt.o
	ar rcs $@ $^

$(BUILD)/libebt.so.$(VERSION): $(BUILD)/ebt.o
	$(CC) $(CFLAGS) -shared -Wl,-soname,$(SONAME) -o $@ $^ $(LDLIBS)

# the usual symlinks, so that a program linked with -L$(BUILD) -lebt runs
# with LD_LIBRARY_PATH=$(BUILD)
$(BUILD)/$(SONAME) $(BUILD)/libebt.so: $(BUILD)/libebt.so.$(VERSION)
	ln -sf libebt.so.$(VERSION) $@

# pkg-config file; Libs.private is what a program linking libebt.a needs:
# the OpenMP flag and LDLIBS the library was built with. The prefix is
# PREFIX's at `make install` time, so it is written there, not kept.
define EBT_PC
prefix=$(PREFIX)
includedir=$(patsubst $(PREFIX)/%,$${prefix}/%,$(INCLUDEDIR))
libdir=$(patsubst $(PREFIX)/%,$${prefix}/%,$(LIBDIR))

Name: ebt
Description: Energy-Based Transformers in C (energy, thinking, training)
Version: $(VERSION)
Cflags: -I$${includedir}
Libs: -L$${libdir} -lebt
Libs.private: $(strip $(OMP) $(LDLIBS))
endef
export EBT_PC

install: $(BUILD)/libebt.a $(BUILD)/libebt.so.$(VERSION)
	$(INSTALL) -d $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(LIBDIR) $(DESTDIR)$(PKGCONFIGDIR)
	$(INSTALL) -m 644 ebt.h $(DESTDIR)$(INCLUDEDIR)/ebt.h
	$(INSTALL) -m 644 $(BUILD)/libebt.a $(DESTDIR)$(LIBDIR)/libebt.a
	$(INSTALL) -m 755 $(BUILD)/libebt.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libebt.so.$(VERSION)
	ln -sf libebt.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf libebt.so.$(VERSION) $(DESTDIR)$(LIBDIR)/libebt.so
	printf '%s\n' "$$EBT_PC" > $(DESTDIR)$(PKGCONFIGDIR)/ebt.pc
	chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/ebt.pc

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/ebt.h $(DESTDIR)$(LIBDIR)/libebt.a \
	      $(DESTDIR)$(LIBDIR)/libebt.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME) \
	      $(DESTDIR)$(LIBDIR)/libebt.so $(DESTDIR)$(PKGCONFIGDIR)/ebt.pc

$(BUILD)/minimal: examples/minimal.c $(BUILD)/libebt.a
	$(CC) $(CFLAGS) -I. -o $@ $< $(BUILD)/libebt.a $(LDLIBS)

$(BUILD)/ebt_lm: examples/ebt_lm.c examples/lm_eval.h examples/png.h $(BUILD)/libebt.a
	$(CC) $(CFLAGS) -I. -o $@ $< $(BUILD)/libebt.a $(LDLIBS)

# `make mpi`: ebt_lm_mpi, whose train runs on several processes under
# mpirun (examples/lm_mpi.h; Debian: libopenmpi-dev openmpi-bin). The plain
# build needs no MPI. MPICC=... picks the wrapper (OMPI_CC=clang for clang).
MPICC ?= mpicc
mpi: $(BUILD)/ebt_lm_mpi

$(BUILD)/ebt_lm_mpi: examples/ebt_lm.c examples/lm_mpi.h examples/lm_eval.h examples/png.h $(BUILD)/libebt.a
	$(MPICC) $(CFLAGS) -DEBT_LM_MPI -I. -o $@ $< $(BUILD)/libebt.a $(LDLIBS)

# compares two checkpoints tensor by tensor (tests/mpi_test.sh)
$(BUILD)/ckpt_diff: tests/ckpt_diff.c $(BUILD)/libebt.a
	$(CC) $(CFLAGS) -I. -o $@ $< $(BUILD)/libebt.a $(LDLIBS)

# the library in double precision, linked by every double-precision test
$(BUILD)/ebt_double.o: ebt.c ebt.h | $(BUILD)
	$(CC) $(CFLAGS) -DEBT_DOUBLE -c ebt.c -o $@

# the minimal example again, with the library in double precision
$(BUILD)/minimal_double: examples/minimal.c $(BUILD)/ebt_double.o ebt.h
	$(CC) $(CFLAGS) -DEBT_DOUBLE -I. -o $@ $< $(BUILD)/ebt_double.o $(TESTLIBS)

# test_fd compiles the library itself in double precision (-DEBT_DOUBLE)
$(BUILD)/test_fd: tests/test_fd.c tests/test_util.h ebt.c ebt.h | $(BUILD)
	$(CC) $(CFLAGS) -DEBT_DOUBLE -o $@ $< $(TESTLIBS)

# finite differences at S = 70, with the library in double precision
$(BUILD)/test_shapes: tests/test_shapes.c tests/test_util.h $(BUILD)/ebt_double.o ebt.h
	$(CC) $(CFLAGS) -DEBT_DOUBLE -o $@ $< $(BUILD)/ebt_double.o $(TESTLIBS)

# the PyTorch reference test again, with the library in double precision
$(BUILD)/test_ref_double: tests/test_ref.c tests/test_util.h tests/ref_vectors.h $(BUILD)/ebt_double.o ebt.h
	$(CC) $(CFLAGS) -DEBT_DOUBLE -o $@ $< $(BUILD)/ebt_double.o $(TESTLIBS)

# the training test again, with the library in double precision
$(BUILD)/test_train_double: tests/test_train.c tests/test_util.h tests/ref_vectors.h $(BUILD)/ebt_double.o ebt.h
	$(CC) $(CFLAGS) -DEBT_DOUBLE -o $@ $< $(BUILD)/ebt_double.o $(TESTLIBS)

# the thinking-rules test again, with the library in double precision
$(BUILD)/test_think_rules_double: tests/test_think_rules.c tests/test_util.h $(BUILD)/ebt_double.o ebt.h
	$(CC) $(CFLAGS) -DEBT_DOUBLE -o $@ $< $(BUILD)/ebt_double.o $(TESTLIBS)

# the thinking test again, with the library in double precision
$(BUILD)/test_think_double: tests/test_think.c tests/test_util.h $(BUILD)/ebt_double.o ebt.h
	$(CC) $(CFLAGS) -DEBT_DOUBLE -o $@ $< $(BUILD)/ebt_double.o $(TESTLIBS)

# the optimiser test again, with the library in double precision
$(BUILD)/test_optim_double: tests/test_optim.c tests/test_util.h $(BUILD)/ebt_double.o ebt.h
	$(CC) $(CFLAGS) -DEBT_DOUBLE -o $@ $< $(BUILD)/ebt_double.o $(TESTLIBS)

# the energy-call test again, with the library in double precision
$(BUILD)/test_energy_double: tests/test_energy.c tests/test_util.h $(BUILD)/ebt_double.o ebt.h
	$(CC) $(CFLAGS) -DEBT_DOUBLE -o $@ $< $(BUILD)/ebt_double.o $(TESTLIBS)

# test_safetensors includes ebt.c to reach the internal reader and writer
$(BUILD)/test_safetensors: tests/test_safetensors.c tests/test_util.h ebt.c ebt.h | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(TESTLIBS)

# test_badinput includes ebt.c to hash the optimiser state and replay buffer
$(BUILD)/test_badinput: tests/test_badinput.c tests/test_util.h ebt.c ebt.h | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(TESTLIBS)

# test_alloc includes ebt.c to replace its allocator (EBT_MALLOC/EBT_REALLOC/EBT_FREE)
$(BUILD)/test_alloc: tests/test_alloc.c tests/test_util.h ebt.c ebt.h | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(TESTLIBS)

# test_kernels includes ebt.c to reach its scalar kernels (exp, sigmoid)
$(BUILD)/test_kernels: tests/test_kernels.c tests/test_util.h ebt.c ebt.h | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(TESTLIBS)

# test_errpaths includes ebt.c to hash the training state and to fail the loader's reads
$(BUILD)/test_errpaths: tests/test_errpaths.c tests/test_util.h ebt.c ebt.h | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(TESTLIBS)

# test_threads runs the evaluation calls on several threads at once
$(BUILD)/test_threads: tests/test_threads.c tests/test_util.h $(BUILD)/libebt.a
	$(CC) $(CFLAGS) -pthread -o $@ $< $(BUILD)/libebt.a $(TESTLIBS)

$(BUILD)/test_%: tests/test_%.c tests/test_util.h tests/ref_vectors.h $(BUILD)/libebt.a
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libebt.a $(TESTLIBS)

# the MPI test runs when mpicc and mpirun are there (else it says why not)
MPI_HINT = (apt-get install libopenmpi-dev openmpi-bin)
MPI_SKIP ?=
ifeq ($(MPI_SKIP),)
MPI_SKIP := $(if $(shell command -v $(MPICC) 2>/dev/null),$(if $(shell command -v mpirun 2>/dev/null),,mpirun not found $(MPI_HINT)),$(MPICC) not found $(MPI_HINT))
endif

# `make test`: the whole suite with each matrix-product backend (oneDNN in
# $(BUILD), CBLAS in $(BUILD)-cblas); `make test-suite` runs it once, with GEMM
test:
	@$(MAKE) --no-print-directory test-suite GEMM=onednn BUILD=$(BUILD) && \
	 $(MAKE) --no-print-directory test-suite GEMM=cblas BUILD=$(BUILD)-cblas

test-suite: all $(TESTS) $(BUILD)/minimal_double $(BUILD)/ckpt_diff
	@echo "== matrix products: GEMM=$(GEMM)"; fail=0; for t in $(TESTS); do echo "== $$t"; (cd tests && ../$$t) || fail=1; done; \
	echo "== minimal example (float, double)"; \
	$(BUILD)/minimal $(BUILD)/minimal.safetensors > /dev/null || fail=1; \
	$(BUILD)/minimal_double $(BUILD)/minimal_double.safetensors > /dev/null || fail=1; \
	echo "== example smoke test"; bash tests/example_smoke.sh $(BUILD)/ebt_lm || fail=1; \
	echo "== install test"; CC="$(CC)" EXTRA_CFLAGS="$(OPT)" bash tests/install_test.sh || fail=1; \
	echo "== MPI test"; if [ "$(GEMM)" != onednn ]; then echo "(run with GEMM=onednn only)"; elif [ -z "$(MPI_SKIP)" ]; then \
	  $(MAKE) --no-print-directory $(BUILD)/ebt_lm_mpi && bash tests/mpi_test.sh $(BUILD) || fail=1; \
	else echo "skipped: $(MPI_SKIP)"; fi; \
	echo "== python tests"; $(MAKE) --no-print-directory pytest || fail=1; \
	if [ $$fail -ne 0 ]; then echo "SOME TESTS FAILED"; fi; exit $$fail

# `make pytest`: the Python package's tests (python/tests) against $(BUILD)'s
# libebt.so, with Debian's python3 (numpy, pytest; python3-torch for the
# PyTorch interop tests, python3-venv/pip for the install test). Skipped,
# with the reason, when python3, numpy or pytest is missing. PYTEST_ENV runs
# them under a preloaded sanitizer runtime (make asan).
PYTHON     ?= /usr/bin/python3
PYTEST_ENV ?=
pytest: $(BUILD)/libebt.so.$(VERSION) $(BUILD)/$(SONAME)
	@if ! $(PYTHON) -c 'import numpy, pytest' 2>/dev/null; then \
	  echo "python tests SKIPPED: $(PYTHON) with numpy and pytest not found (apt-get install python3-numpy python3-pytest)"; \
	else \
	  $(PYTHON) -c 'import torch' 2>/dev/null || echo "note: python3-torch not found, the PyTorch interop tests are skipped"; \
	  env $(PYTEST_ENV) EBT_LIB=$(abspath $(BUILD))/$(SONAME) CC="$(CC)" $(PYTHON) -m pytest -q -rs -p no:cacheprovider python/tests; \
	fi

# (the Python tests load the sanitized libebt.so into python3 with the
# runtimes preloaded; Python's own allocations are not leak-checked)
asan:
	ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1 $(MAKE) test-suite BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all" \
	  PYTEST_ENV="LD_PRELOAD=$$($(CC) -print-file-name=libasan.so):$$($(CC) -print-file-name=libubsan.so) ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=0"

# `make fuzz`: the libFuzzer harnesses of tests/fuzz (checkpoint loader,
# safetensors reader, ebt_lm's options and corpus reader) built with clang,
# ASan and UBSan into build-fuzz/, each run FUZZ_SECONDS on a fresh copy of
# its seeds there; fails on any crash, leak, sanitizer report or timeout
# (the crashing input is left in build-fuzz/artifacts/). Needs clang and
# libclang-rt-14-dev (libFuzzer). Built without OpenMP, one BLAS thread.
FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_BUILD   ?= build-fuzz
FUZZ_FLAGS    = -std=c99 -Wall -Wextra -Wpedantic -g -O1 -fno-omit-frame-pointer \
                -fsanitize=fuzzer,address,undefined,float-cast-overflow -fno-sanitize-recover=all
FUZZ_ENV      = OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=1 \
                UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
FUZZ_HARNESSES = fuzz_load fuzz_st fuzz_lm_args fuzz_lm_text
FUZZ_LIBS     = -lopenblas -lm   # the harnesses build ebt.c with CBLAS products

$(FUZZ_BUILD):
	mkdir -p $(FUZZ_BUILD)

# seed corpus generator: small valid checkpoints of every arch and option
$(FUZZ_BUILD)/make_corpus: tests/fuzz/make_corpus.c ebt.c ebt.h | $(FUZZ_BUILD)
	$(FUZZ_CC) $(STD) -O1 -g -I. -o $@ tests/fuzz/make_corpus.c ebt.c $(FUZZ_LIBS)

$(FUZZ_BUILD)/fuzz_load: tests/fuzz/fuzz_load.c tests/fuzz/fuzz_util.h ebt.c ebt.h | $(FUZZ_BUILD)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(FUZZ_LIBS)

$(FUZZ_BUILD)/fuzz_st: tests/test_safetensors.c tests/test_util.h ebt.c ebt.h | $(FUZZ_BUILD)
	$(FUZZ_CC) $(FUZZ_FLAGS) -DEBT_ST_FUZZ -o $@ $< $(FUZZ_LIBS)

$(FUZZ_BUILD)/fuzz_lm_%: tests/fuzz/fuzz_lm_%.c tests/fuzz/fuzz_util.h examples/ebt_lm.c examples/lm_eval.h examples/png.h ebt.c ebt.h | $(FUZZ_BUILD)
	$(FUZZ_CC) $(FUZZ_FLAGS) -I. -o $@ $< ebt.c $(FUZZ_LIBS)

fuzz: $(FUZZ_BUILD)/make_corpus $(addprefix $(FUZZ_BUILD)/,$(FUZZ_HARNESSES))
	@rm -rf $(FUZZ_BUILD)/corpus $(FUZZ_BUILD)/artifacts && mkdir -p $(FUZZ_BUILD)/corpus/seeds $(FUZZ_BUILD)/artifacts
	@$(FUZZ_BUILD)/make_corpus $(FUZZ_BUILD)/corpus/seeds && cp tests/fuzz/crashes/*.safetensors $(FUZZ_BUILD)/corpus/seeds/
	@fail=0; start=$$(date +%s); for h in $(FUZZ_HARNESSES); do \
	  case $$h in \
	    fuzz_load)    seeds=$(FUZZ_BUILD)/corpus/seeds; opts="-max_len=65536 -timeout=60 -dict=tests/fuzz/load.dict";; \
	    fuzz_st)      seeds=$(FUZZ_BUILD)/corpus/seeds; opts="-max_len=65536 -timeout=30 -dict=tests/fuzz/load.dict";; \
	    fuzz_lm_args) seeds=tests/fuzz/lm_args;   opts="-max_len=4096 -timeout=30 -close_fd_mask=3";; \
	    fuzz_lm_text) seeds=tests/fuzz/lm_text;   opts="-max_len=65536 -timeout=30 -close_fd_mask=3";; \
	  esac; \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$h && cp $$seeds/* $(FUZZ_BUILD)/corpus/$$h/; \
	  echo "== $$h: $(FUZZ_SECONDS) s"; \
	  if $(FUZZ_ENV) $(FUZZ_BUILD)/$$h -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 $$opts \
	       -artifact_prefix=$(FUZZ_BUILD)/artifacts/$$h- $(FUZZ_BUILD)/corpus/$$h > $(FUZZ_BUILD)/$$h.log 2>&1 && \
	     ! grep -q "runtime error\|ERROR: \|Sanitizer" $(FUZZ_BUILD)/$$h.log; then \
	    grep -E "^#[0-9]+[[:space:]]+DONE|^Done [0-9]+ runs|stat::(new_units_added|slowest_unit_time_sec|peak_rss_mb)" $(FUZZ_BUILD)/$$h.log; \
	  else \
	    fail=1; grep -v "^\"\|# Uses:" $(FUZZ_BUILD)/$$h.log | tail -n 60; echo "FAILED: $$h (full log: $(FUZZ_BUILD)/$$h.log)"; \
	  fi; \
	done; echo "fuzz: $$(( $$(date +%s) - start )) s"; \
	if [ $$fail -ne 0 ]; then echo "FUZZING FOUND A PROBLEM"; fi; exit $$fail

$(BUILD)/bench: bench/bench.c $(BUILD)/libebt.a
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libebt.a $(LDLIBS) -ldnnl -lopenblas

bench: $(BUILD)/bench
	$(BUILD)/bench --all

# `make mutate`: deliberate bugs (tests/mutants.txt) put into a copy of
# ebt.c one at a time; fails if the tests meant to catch one pass (needs python3)
mutate:
	python3 tests/mutate.py --jobs 2

# regenerate the PyTorch reference vectors (needs python3-torch); the same
# bytes on every AVX2 machine (the scripts pin their float64 kernels)
ref:
	/usr/bin/python3 tests/ref/gen_ref.py
	/usr/bin/python3 tests/ref/gen_train_ref.py

clean:
	rm -rf build build-cblas build-asan $(FUZZ_BUILD) python/ebt/__pycache__ python/tests/__pycache__
