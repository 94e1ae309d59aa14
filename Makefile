# ebt: `make` builds libebt.a, libebt.so and the examples; `make test` builds
# and runs every test (non-zero exit on any failure); `make asan` runs the
# tests under AddressSanitizer + UndefinedBehaviorSanitizer.
CC      ?= cc
OPT     ?= -O2 -g
# OpenMP splits the row-wise and attention kernels over threads; `make OMP=`
# builds without it (a program linking libebt.a then needs -fopenmp too)
OMP     ?= -fopenmp
STD      = -std=c99 -Wall -Wextra -Wpedantic
CFLAGS  += $(STD) $(OPT) $(OMP)
LDLIBS   = -lopenblas -lm
BUILD   ?= build

EXAMPLES = $(BUILD)/minimal $(BUILD)/ebt_lm
TESTS    = $(BUILD)/test_fd $(BUILD)/test_ref $(BUILD)/test_leak $(BUILD)/test_ckpt $(BUILD)/test_badinput $(BUILD)/test_safetensors $(BUILD)/test_train $(BUILD)/test_train_double $(BUILD)/test_think

.PHONY: all test asan bench clean ref
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

# test_fd compiles the library itself in double precision (-DEBT_DOUBLE)
$(BUILD)/test_fd: tests/test_fd.c tests/test_util.h ebt.c ebt.h | $(BUILD)
	$(CC) $(CFLAGS) -DEBT_DOUBLE -o $@ $< -lcmocka $(LDLIBS)

# the training test again, with the library in double precision
$(BUILD)/test_train_double: tests/test_train.c tests/test_util.h tests/ref_vectors.h ebt.c ebt.h | $(BUILD)
	$(CC) $(CFLAGS) -DEBT_DOUBLE -o $@ $< ebt.c -lcmocka $(LDLIBS)

# test_safetensors includes ebt.c to reach the internal reader and writer
$(BUILD)/test_safetensors: tests/test_safetensors.c ebt.c ebt.h | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< $(LDLIBS)

# test_badinput includes ebt.c to hash the optimiser state and replay buffer
$(BUILD)/test_badinput: tests/test_badinput.c tests/test_util.h ebt.c ebt.h | $(BUILD)
	$(CC) $(CFLAGS) -o $@ $< -lcmocka $(LDLIBS)

$(BUILD)/test_%: tests/test_%.c tests/test_util.h tests/ref_vectors.h $(BUILD)/libebt.a
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libebt.a -lcmocka $(LDLIBS)

test: all $(TESTS)
	@fail=0; for t in $(TESTS); do echo "== $$t"; (cd tests && ../$$t) || fail=1; done; \
	$(BUILD)/minimal > /dev/null || fail=1; \
	echo "== example smoke test"; bash tests/example_smoke.sh $(BUILD)/ebt_lm || fail=1; \
	if [ $$fail -ne 0 ]; then echo "SOME TESTS FAILED"; fi; exit $$fail

asan:
	ASAN_OPTIONS=allocator_may_return_null=1:detect_leaks=1 $(MAKE) test BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all"

$(BUILD)/bench: bench/bench.c $(BUILD)/libebt.a
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libebt.a $(LDLIBS)

bench: $(BUILD)/bench
	$(BUILD)/bench

# regenerate the PyTorch reference vectors (needs python3-torch)
ref:
	/usr/bin/python3 tests/ref/gen_ref.py

clean:
	rm -rf build build-asan
