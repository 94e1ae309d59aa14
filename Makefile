# ebt: `make` builds libebt.a, libebt.so and the examples; `make test` builds
# and runs every test (non-zero exit on any failure); `make asan` runs the
# tests under AddressSanitizer + UndefinedBehaviorSanitizer.
CC      ?= cc
OPT     ?= -O3 -g
# OpenMP splits the row-wise and attention kernels over threads; `make OMP=`
# builds without it (a program linking libebt.a then needs -fopenmp too)
OMP     ?= -fopenmp
STD      = -std=c99 -Wall -Wextra -Wpedantic
CFLAGS  += $(STD) $(OPT) $(OMP)
LDLIBS   = -lopenblas -lm
BUILD   ?= build

EXAMPLES = $(BUILD)/minimal $(BUILD)/ebt_lm
TESTS    = $(BUILD)/test_fd $(BUILD)/test_ref $(BUILD)/test_leak $(BUILD)/test_ckpt $(BUILD)/test_badinput $(BUILD)/test_safetensors $(BUILD)/test_train $(BUILD)/test_train_double $(BUILD)/test_think $(BUILD)/test_think_double $(BUILD)/test_alloc $(BUILD)/test_threads $(BUILD)/test_savefail \
           $(BUILD)/test_optim $(BUILD)/test_optim_double $(BUILD)/test_think_opts \
           $(BUILD)/test_energy $(BUILD)/test_energy_double $(BUILD)/test_generate $(BUILD)/test_errpaths

.PHONY: all test asan fuzz bench clean ref
all: $(BUILD)/libebt.a $(BUILD)/libebt.so $(EXAMPLES)

$(BUILD):
	mkdir -p $(BUILD)

$(BUILD)/ebt.o: ebt.c ebt.h | $(BUILD)
	$(CC) $(CFLAGS) -fPIC -c ebt.c -o $@

$(BUILD)/libebt.a: $(BUILD)/ebt.o
	ar rcs $@ $^

$(BUILD)/libebt.so: $(BUILD)/ebt.o
	$(CC) $(CFLAGS) -shared -o $@ $^ $(LDLIBS)

$(BUILD)/minimal: examples/minimal.c $(BUILD)/libebt.a
	$(CC) $(CFLAGS) -I. -o $@ $< $(BUILD)/libebt.a $(LDLIBS)

$(BUILD)/ebt_lm: examples/ebt_lm.c examples/png.h $(BUILD)/libebt.a
	$(CC) $(CFLAGS) -I. -o $@ $< $(BUILD)/libebt.a $(LDLIBS)

# the library in double precision, for the *_double tests
$(BUILD)/ebt_double.o: ebt.c ebt.h | $(BUILD)
	$(CC) $(CFLAGS) -DEBT_DOUBLE -c ebt.c -o $@

# test_fd compiles the library itself in double precision (-DEBT_DOUBLE)
$(BUILD)/test_fd: tests/test_fd.c tests/test_util.h ebt.c ebt.h | $(BUILD)
	$(CC) $(CFLAGS) -DEBT_DOUBLE -o $@ $< -lcmocka $(LDLIBS)

# the training test again, with the library in double precision
$(BUILD)/test_train_double: tests/test_train.c tests/test_util.h tests/ref_vectors.h $(BUILD)/ebt_double.o ebt.h
	$(CC) $(CFLAGS) -DEBT_DOUBLE -o $@ $< $(BUILD)/ebt_double.o -lcmocka $(LDLIBS)

# the thinking test again, with the library in double precision
$(BUILD)/test_think_double: tests/test_think.c tests/test_util.h $(BUILD)/ebt_double.o ebt.h
	$(CC) $(CFLAGS) -DEBT_DOUBLE -o $@ $< $(BUILD)/ebt_double.o -lcmocka $(LDLIBS)

# the optimiser test again, with the library in double precision
$(BUILD)/test_optim_double: tests/test_optim.c tests/test_util.h $(BUILD)/ebt_double.o ebt.h
	$(CC) $(CFLAGS) -DEBT_DOUBLE -o $@ $< $(BUILD)/ebt_double.o -lcmocka $(LDLIBS)

# the energy-call test again, with the library in double precision
$(BUILD)/test_energy_double: tests/test_energy.c tests/test_util.h $(BUILD)/ebt_double.o ebt.h
	$(CC) $(CFLAGS) -DEBT_DOUBLE -o $@ $< $(BUILD)/ebt_double.o -lcmocka $(LDLIBS)

# test_safetensors includes ebt.c to reach the internal reader and writer
$(BUILD)/test_safetensors: tests/test_safetensors.c tests/test_util.h ebt.c ebt.h | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# test_badinput includes ebt.c to hash the optimiser state and replay buffer
$(BUILD)/test_badinput: tests/test_badinput.c tests/test_util.h ebt.c ebt.h | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< -lcmocka $(LDLIBS)

# test_alloc includes ebt.c to replace its allocator (EBT_MALLOC/EBT_REALLOC/EBT_FREE)
$(BUILD)/test_alloc: tests/test_alloc.c tests/test_util.h ebt.c ebt.h | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< -lcmocka $(LDLIBS)

# test_errpaths includes ebt.c to hash the training state and to fail the loader's reads
$(BUILD)/test_errpaths: tests/test_errpaths.c tests/test_util.h ebt.c ebt.h | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< -lcmocka $(LDLIBS)

# test_threads runs the evaluation calls on several threads at once
$(BUILD)/test_threads: tests/test_threads.c tests/test_util.h $(BUILD)/libebt.a
	$(CC) $(CFLAGS) -pthread -o $@ $< $(BUILD)/libebt.a -lcmocka $(LDLIBS)

$(BUILD)/test_%: tests/test_%.c tests/test_util.h tests/ref_vectors.h $(BUILD)/libebt.a
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libebt.a -lcmocka $(LDLIBS)

test: all $(TESTS)
	@fail=0; for t in $(TESTS); do echo "== $$t"; (cd tests && ../$$t) || fail=1; done; \
	$(BUILD)/minimal > /dev/null || fail=1; \
	echo "== example smoke test"; bash tests/example_smoke.sh $(BUILD)/ebt_lm || fail=1; \
	if [ $$fail -ne 0 ]; then echo "SOME TESTS FAILED"; fi; exit $$fail

asan:
	ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1 $(MAKE) test BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"

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
                -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all
FUZZ_ENV      = OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=1 \
                UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
FUZZ_HARNESSES = fuzz_load fuzz_st fuzz_lm_args fuzz_lm_text

$(FUZZ_BUILD):
	mkdir -p $(FUZZ_BUILD)

# seed corpus generator: small valid checkpoints of every arch and option
$(FUZZ_BUILD)/make_corpus: tests/fuzz/make_corpus.c ebt.c ebt.h | $(FUZZ_BUILD)
	$(FUZZ_CC) $(STD) -O1 -g -I. -o $@ tests/fuzz/make_corpus.c ebt.c $(LDLIBS)

$(FUZZ_BUILD)/fuzz_load: tests/fuzz/fuzz_load.c tests/fuzz/fuzz_util.h ebt.c ebt.h | $(FUZZ_BUILD)
	$(FUZZ_CC) $(FUZZ_FLAGS) -o $@ $< $(LDLIBS)

$(FUZZ_BUILD)/fuzz_st: tests/test_safetensors.c tests/test_util.h ebt.c ebt.h | $(FUZZ_BUILD)
	$(FUZZ_CC) $(FUZZ_FLAGS) -DEBT_ST_FUZZ -o $@ $< $(LDLIBS)

$(FUZZ_BUILD)/fuzz_lm_%: tests/fuzz/fuzz_lm_%.c tests/fuzz/fuzz_util.h examples/ebt_lm.c examples/png.h ebt.c ebt.h | $(FUZZ_BUILD)
	$(FUZZ_CC) $(FUZZ_FLAGS) -I. -o $@ $< ebt.c $(LDLIBS)

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
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libebt.a $(LDLIBS)

bench: $(BUILD)/bench
	$(BUILD)/bench --all

# regenerate the PyTorch reference vectors (needs python3-torch)
ref:
	/usr/bin/python3 tests/ref/gen_ref.py

clean:
	rm -rf build build-asan $(FUZZ_BUILD)
