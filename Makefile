# unet — U-Net and FCN in C11.  One Makefile for the library, the CLI, tests and benchmarks.
#
#   make            build libunet.a and the unet CLI (build/)
#   make test       install missing Debian packages, build and run every test;
#                   ends with "N passed, N failed" and exits non-zero on any failure
#   make asan       the same tests under AddressSanitizer + UndefinedBehaviorSanitizer (build/asan)
#   make demo       train a small U-Net on data/sample, predict a held-out slice, print its score
#   make bench      benchmarks (never part of make test)
#   make golden     regenerate tests/golden/*.safetensors with PyTorch (needs python3-torch)
#   make python     install the Python package (python/, docs/python.md) with pip
#   make clean
#
# Options: CC=clang, NO_OMP=1 (no OpenMP), NO_BLAS=1 (built-in GEMM instead of OpenBLAS),
#          WERROR=1 (warnings are errors, as in CI), BUILD=dir (object directory),
#          MPI=1 (unet runs under mpirun: data-parallel train, sharded predict; docs/scaling.md).

CC      ?= cc
BUILD   ?= build
PYTHON  ?= /usr/bin/python3

WARN     = -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wcast-qual -Wpointer-arith
OPT     ?= -O2 -g
SAN     ?=
# -fPIC: the Python extension (python/) links libunet.a into a shared object.
CFLAGS  += $(OPT) $(SAN) -std=c11 $(WARN) -fPIC
LDFLAGS += $(SAN)
CPPFLAGS += -Iinclude -Isrc -D_DEFAULT_SOURCE -D_POSIX_C_SOURCE=200809L
LDLIBS  += -lpng -ltiff -lcjson -lm -lpthread

ifeq ($(WERROR),1)
CFLAGS  += -Werror
endif

# clang's OpenMP runtime is LLVM's libomp; it also exports GNU libgomp's entry points, and it
# comes first in the link, so OpenBLAS's OpenMP build (made with gcc, needing libgomp) binds to
# it too: one runtime in the process either way.  (clang -fopenmp=libgomp would not do: clang
# then ignores every OpenMP pragma.)
OMPFLAG  = -fopenmp
ifneq ($(NO_OMP),1)
CFLAGS  += $(OMPFLAG)
LDFLAGS += $(OMPFLAG)
else
CFLAGS  += -Wno-unknown-pragmas
endif

# GEMM: OpenBLAS's OpenMP build, called one block per thread from unet's own OpenMP loops
# (gemm.c): deterministic, one thread pool, per-context thread counts.  Not the serial build:
# Debian builds it without USE_LOCKING, so concurrent calls race on its buffer pool.  Not the
# pthread build: a second thread pool.  rpath pins the variant whatever the libopenblas.so.0
# alternative points to.
BLASDIR  = /usr/lib/x86_64-linux-gnu/openblas-openmp
ifeq ($(NO_BLAS),1)
CPPFLAGS += -DUNET_NO_BLAS
else
CPPFLAGS += -I/usr/include/x86_64-linux-gnu/openblas-openmp
LDFLAGS  += -L$(BLASDIR) -Wl,-rpath,$(BLASDIR)
LDLIBS   := -lopenblas -ldl $(LDLIBS)
endif

LIB_SRC  = $(wildcard src/*.c src/ops/*.c src/io/*.c)
LIB_OBJ  = $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_SRC  = $(wildcard src/cli/*.c)
CLI_OBJ  = $(CLI_SRC:%.c=$(BUILD)/%.o)
# The process group (src/cli/dist.h): MPI's with MPI=1, else one process.  Open MPI's flags come
# from mpicc (its headers as system headers: no warnings of theirs).  $(BUILD)/unet-mpi is the
# MPI build of the CLI beside the plain one; tests/mpi.sh runs it whenever mpicc is installed.
MPI_CFLAGS = $(subst -I,-isystem ,$(shell mpicc --showme:compile 2>/dev/null))
MPI_LIBS   = $(shell mpicc --showme:link 2>/dev/null)
HAVE_MPI  := $(shell command -v mpicc >/dev/null 2>&1 && echo 1)
ifeq ($(MPI):$(HAVE_MPI),1:)
$(error MPI=1 needs mpicc: sh scripts/deps.sh installs Open MPI (openmpi-bin, libopenmpi-dev))
endif
ifeq ($(MPI),1)
DIST_OBJ = $(BUILD)/src/dist/mpi.o
DIST_LIBS = $(MPI_LIBS)
else
DIST_OBJ = $(BUILD)/src/dist/single.o
DIST_LIBS =
endif
$(BUILD)/src/dist/mpi.o: CPPFLAGS += $(MPI_CFLAGS)
# The optimizer loops vectorize their sqrtf only when it need not set errno (src/ops/optim.c).
$(BUILD)/src/ops/optim.o: CFLAGS += -fno-math-errno
TEST_SRC = $(wildcard tests/test_*.c)
TEST_BIN = $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
EXAMPLE_SRC = $(wildcard examples/*.c)
EXAMPLE_BIN = $(EXAMPLE_SRC:examples/%.c=$(BUILD)/examples/%)
# bench_allreduce.c is an MPI program: bench/mpi.sh builds it with mpicc.
BENCH_SRC = $(filter-out bench/bench_allreduce.c,$(wildcard bench/bench_*.c))
BENCH_BIN = $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
HDRS     = $(wildcard include/*.h src/*.h src/ops/*.h src/io/*.h src/cli/*.h tests/*.h)

.PHONY: all deps test asan demo bench golden clean check-tests FORCE lib link-flags python python-ext \
        check-python

# Build the library, the CLI and the examples (programs on the public API only).
all: $(BUILD)/libunet.a $(BUILD)/unet unet $(EXAMPLE_BIN)

# Install missing Debian packages (no-op when everything is there).
deps:
	@scripts/deps.sh

# Objects depend on the flags they were compiled with ($(BUILD)/.cflags changes only when the
# flags do), so a build directory made with other flags (e.g. before -fPIC) is rebuilt.
$(BUILD)/.cflags: FORCE
	@mkdir -p $(BUILD)
	@echo '$(CC) $(CPPFLAGS) $(CFLAGS)' | cmp -s - $@ || echo '$(CC) $(CPPFLAGS) $(CFLAGS)' >$@

FORCE:

$(BUILD)/%.o: %.c $(HDRS) $(BUILD)/.cflags
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

lib: $(BUILD)/libunet.a

$(BUILD)/libunet.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# $(BUILD)/.dist names the group the CLI was linked with, so that switching MPI=1 relinks it.
$(BUILD)/.dist: FORCE
	@mkdir -p $(BUILD)
	@echo '$(DIST_OBJ)' | cmp -s - $@ || echo '$(DIST_OBJ)' >$@

$(BUILD)/unet: $(CLI_OBJ) $(DIST_OBJ) $(BUILD)/libunet.a $(BUILD)/.dist
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(DIST_OBJ) $(BUILD)/libunet.a $(LDLIBS) $(DIST_LIBS)

$(BUILD)/unet-mpi: $(CLI_OBJ) $(BUILD)/src/dist/mpi.o $(BUILD)/libunet.a
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/src/dist/mpi.o $(BUILD)/libunet.a $(LDLIBS) \
	  $(MPI_LIBS)

# A link at the top so the CLI is ./unet after make.
unet: $(BUILD)/unet
	@ln -sf $(BUILD)/unet unet

$(BUILD)/tests/%: tests/%.c $(BUILD)/libunet.a $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libunet.a $(LDLIBS)

# test_options compiles the CLI's option parser in, test_pipeline the predict pipeline (src/cli/
# is not part of the library).
$(BUILD)/tests/test_options: src/cli/options.c src/cli/cli.c src/cli/dist.c src/dist/single.c
$(BUILD)/tests/test_pipeline: src/cli/pipeline.c src/cli/options.c src/cli/cli.c src/cli/dist.c \
                              src/dist/single.c

$(BUILD)/examples/%: examples/%.c $(BUILD)/libunet.a include/unet.h
	@mkdir -p $(dir $@)
	$(CC) -Iinclude $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libunet.a $(LDLIBS)

$(BUILD)/bench/%: bench/%.c bench/bench.h $(BUILD)/libunet.a $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libunet.a $(LDLIBS)

# Build and run every test binary; tests/run.sh prints the final "N passed, N failed".
test: deps
	@$(MAKE) --no-print-directory check-tests

# The Python package's tests (tests/python.sh: pytest, ONNX and bioimage.io checks) run in every
# build but the sanitizer ones, where python3 itself would need the sanitizer runtime preloaded;
# there they are reported as not run, never skipped silently.
ifeq ($(SAN),)
PY_CHECK = tests/python.sh
PY_DEP   = python-ext
else
PY_CHECK =
PY_DEP   =
endif
# The MPI tests (tests/mpi.sh: mpirun -np 2) where mpicc is installed (scripts/deps.sh installs
# Open MPI), not under the sanitizers (Open MPI's own allocations would be reported).
ifeq ($(SAN)$(HAVE_MPI),1)
MPI_CHECK = tests/mpi.sh
MPI_DEP   = $(BUILD)/unet-mpi
else
MPI_CHECK =
MPI_DEP   =
endif

check-tests: $(TEST_BIN) $(BUILD)/unet $(EXAMPLE_BIN) $(PY_DEP) $(MPI_DEP)
	@$(if $(SAN),echo "note: the Python package's tests (tests/python.sh) and the MPI tests (tests/mpi.sh) do not run under $(SAN)";) \
	  $(if $(SAN)$(HAVE_MPI),,echo "note: no mpicc: the MPI tests (tests/mpi.sh) do not run (scripts/deps.sh installs Open MPI)";) \
	  UNET_BIN=$(BUILD)/unet UNET_EXAMPLES=$(BUILD)/examples UNET_PYTHONPATH=$(BUILD)/python \
	  UNET_MPI_BIN=$(BUILD)/unet-mpi PYTHON=$(PYTHON) tests/run.sh $(TEST_BIN) $(PY_CHECK) $(MPI_CHECK)

# The same tests under ASan + UBSan, in their own build directory.
asan: deps
	@$(MAKE) --no-print-directory BUILD=build/asan \
	  OPT="-O1 -g -fno-omit-frame-pointer" \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined" check-tests

# Train on the bundled ISBI 2012 sample, predict a held-out slice, print its score.
demo: deps all
	@scripts/demo.sh $(BUILD)/unet

# Benchmarks: bench/run measures unet and, when installed, PyTorch and ONNX Runtime.
bench: all $(BENCH_BIN)
	@bench/run $(BUILD)

# Regenerate the golden files from PyTorch (the script is the specification).
golden:
	$(PYTHON) tools/make_golden.py tests/golden

clean:
	rm -rf build unet python/build python/unet.egg-info

# ---- The Python package (python/, docs/python.md) -------------------------------------------
# python/setup.py builds the extension unet._core over libunet.a: `make python` installs it with
# pip (PIP_FLAGS, default --break-system-packages for Debian 12's system python3; see
# docs/python.md for a virtual environment).  python-ext builds it into $(BUILD)/python for the
# tests, with this build's library and flags (CC is also the extension's compiler, so a clang
# build links clang's OpenMP runtime).  link-flags prints the library's path and link flags,
# which setup.py reads when pip runs it.
PIP_FLAGS ?= --break-system-packages

link-flags:
	@echo $(abspath $(BUILD))/libunet.a
	@echo $(LDFLAGS) $(LDLIBS)

python: deps lib
	$(PYTHON) -m pip install --no-build-isolation --no-index $(PIP_FLAGS) ./python

python-ext: $(BUILD)/libunet.a
	@cd python && UNET_LIB=$(abspath $(BUILD))/libunet.a UNET_LINK="$(LDFLAGS) $(LDLIBS)" \
	  UNET_CFLAGS="$(WARN)$(if $(filter 1,$(WERROR)), -Werror)" \
	  CC="$(CC)" LDSHARED="$(CC) -shared" $(PYTHON) setup.py -q build \
	  --build-base $(abspath $(BUILD))/python-build --build-lib $(abspath $(BUILD))/python \
	  >$(abspath $(BUILD))/python-build.log 2>&1 || { cat $(abspath $(BUILD))/python-build.log; exit 1; }

check-python: python-ext $(BUILD)/unet
	@UNET_BIN=$(BUILD)/unet UNET_PYTHONPATH=$(BUILD)/python PYTHON=$(PYTHON) tests/python.sh

# ---- Fuzzing and robustness (docs/robustness.md) -------------------------------------------
# make fuzz         builds the libFuzzer targets fuzz/fuzz_<target>.c with clang (ASan + UBSan,
#                   libclang-rt-dev) in build/fuzz and runs each for FUZZ_SECONDS (60) from its
#                   seed corpus fuzz/corpus/<target>; new inputs go to build/fuzz/corpus/<target>,
#                   crashes to build/fuzz/crash-<target>-*.  Fails when any target crashed.
#                   FUZZ_TARGETS="png tiff" runs a subset.  Not part of make test or CI (minutes).
# make fuzz-corpus  rewrites the committed seed corpora with fuzz/make_corpus.c.
# make valgrind     a tiny train + predict under valgrind memcheck (scripts/valgrind.sh).
FUZZ_TARGETS ?= png tiff npy image safetensors checkpoint resume
FUZZ_SECONDS ?= 60
FUZZ_DIR      = build/fuzz
FUZZ_SAN      = -fsanitize=address,undefined -fno-sanitize-recover=undefined

.PHONY: fuzz fuzz-build fuzz-corpus valgrind

fuzz: fuzz-build
	@fuzz/run.sh $(FUZZ_DIR) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The library is instrumented for coverage (fuzzer-no-link), without OpenMP and OpenBLAS so
# that every instruction the targets reach is instrumented; only the targets link libFuzzer.
fuzz-build:
	@scripts/deps.sh clang libclang-rt-14-dev
	@$(MAKE) --no-print-directory BUILD=$(FUZZ_DIR) CC=clang NO_OMP=1 NO_BLAS=1 \
	  OPT="-O1 -g -fno-omit-frame-pointer" SAN="$(FUZZ_SAN) -fsanitize=fuzzer-no-link" \
	  $(FUZZ_TARGETS:%=$(FUZZ_DIR)/fuzz_%)

$(FUZZ_DIR)/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz_common.h $(FUZZ_DIR)/libunet.a $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -fsanitize=fuzzer $(LDFLAGS) -o $@ $< $(FUZZ_DIR)/libunet.a $(LDLIBS)

fuzz-corpus: $(BUILD)/libunet.a
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $(BUILD)/make_corpus fuzz/make_corpus.c \
	  $(BUILD)/libunet.a $(LDLIBS)
	rm -rf fuzz/corpus
	$(BUILD)/make_corpus fuzz/corpus

valgrind: $(BUILD)/unet
	@scripts/deps.sh valgrind
	@scripts/valgrind.sh $(BUILD)/unet
