# clara-server build. `make` builds the CLI, the server name and the demo model; `make test` runs
# every test; `make SANITIZER=address|undefined|thread test` does the same under a sanitizer (in
# its own build directory); `make fuzz` runs each libFuzzer target for FUZZ_SECONDS.

CC       ?= cc
PYTHON   ?= /usr/bin/python3
SANITIZER ?=
FUZZ_SECONDS ?= 60
OPT      ?= -O2

ifeq ($(SANITIZER),)
BUILD    ?= build
SANFLAGS :=
else ifeq ($(SANITIZER),address)
BUILD    ?= build/asan
SANFLAGS := -fsanitize=address -fno-omit-frame-pointer
else ifeq ($(SANITIZER),undefined)
BUILD    ?= build/ubsan
SANFLAGS := -fsanitize=undefined -fno-sanitize-recover=all
else ifeq ($(SANITIZER),thread)
BUILD    ?= build/tsan
SANFLAGS := -fsanitize=thread
else
$(error SANITIZER must be address, undefined or thread)
endif

PKGS     := libcjson libmicrohttpd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS))

CPPFLAGS += -Iinclude -Isrc -D_DEFAULT_SOURCE $(PKG_CFLAGS)
CFLAGS   += -std=c11 -Wall -Wextra -Werror $(OPT) -g -MMD -MP $(SANFLAGS)
LDFLAGS  += $(SANFLAGS)
LDLIBS   += $(PKG_LIBS) -lm -lpthread

LIB_SRC  := $(sort $(wildcard src/*.c src/base/*.c src/convert/*.c src/cpu/*.c src/bench/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
CLI_SRC  := $(sort $(wildcard cli/*.c))
CLI_SRC  += $(sort $(wildcard server/*.c))
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_NAMES := $(FUZZ_SRC:tests/fuzz/fuzz_%.c=%)
REPLAY_BIN := $(FUZZ_NAMES:%=$(BUILD)/tests/replay_%)

.PHONY: all test unit format format-check fuzz clean
.PRECIOUS: $(BUILD)/obj/%.o
all: $(BUILD)/clara $(BUILD)/clara-server $(BUILD)/demo/clara-demo.gguf

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

# The SIMD kernels are compiled for their instruction set; dispatch.c calls them only on CPUs
# that have it.
AVX2_FLAGS   := -mavx2 -mfma -mf16c
AVX512_FLAGS := -mavx512f -mavx512bw -mavx512vl -mavx512vnni -mavx512bf16 -mf16c -mfma
$(BUILD)/obj/src/cpu/kernels_avx2.o: CFLAGS += $(AVX2_FLAGS)
$(BUILD)/obj/src/cpu/kernels_avx512.o: CFLAGS += $(AVX512_FLAGS)

$(BUILD)/libclara.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/clara: $(CLI_OBJ) $(BUILD)/libclara.a
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) $(BUILD)/libclara.a $(LDLIBS)

# clara-server is the same program; it looks at argv[0] and runs the server subcommand.
$(BUILD)/clara-server: $(BUILD)/clara
	ln -sf clara $@

# The demo model clara-server serves when no model is configured: synthetic weights (answers are
# meaningless), the real CLaRa layout and a real trained tokenizer, converted by our converter.
DEMO_GEN := tests/fixtures/gen_fixtures.py $(wildcard tests/fixtures/*.py tests/fixtures/tokenizer/*)
$(BUILD)/demo/clara-demo.gguf: $(BUILD)/clara $(DEMO_GEN)
	@mkdir -p $(BUILD)/demo
	$(PYTHON) tests/fixtures/gen_fixtures.py --out $(BUILD)/demo/hf --variants e2e16 --quiet
	$(BUILD)/clara convert --base $(BUILD)/demo/hf/base --clara $(BUILD)/demo/hf/e2e16 --out $@ --type f32 --quiet

$(BUILD)/tests/test_%: $(BUILD)/obj/tests/unit/test_%.o $(BUILD)/libclara.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $< $(BUILD)/libclara.a $(LDLIBS)

# Replays the saved fuzz corpus (and regression cases) through each target without libFuzzer.
$(BUILD)/tests/replay_%: $(BUILD)/obj/tests/fuzz/fuzz_%.o $(BUILD)/obj/tests/fuzz/replay_main.o $(BUILD)/libclara.a
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

unit: $(UNIT_BIN) $(REPLAY_BIN)

test: all $(UNIT_BIN) $(REPLAY_BIN)
	BUILD=$(BUILD) PYTHON=$(PYTHON) SANITIZER=$(SANITIZER) tests/run_tests.sh

# libFuzzer needs clang; objects go to build/fuzz, never mixed with the gcc build.
comma := ,
FUZZ_CC    ?= clang
FUZZ_FLAGS := -std=c11 -g -O1 -Iinclude -Isrc -D_DEFAULT_SOURCE $(PKG_CFLAGS) \
              -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
fuzz: $(FUZZ_NAMES:%=build/fuzz/fuzz_%)
	@for t in $(FUZZ_NAMES); do \
	  mkdir -p build/fuzz/work/$$t tests/fuzz/regressions/$$t; \
	  echo "fuzzing $$t for $(FUZZ_SECONDS) s"; \
	  build/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=10 \
	    -artifact_prefix=tests/fuzz/regressions/$$t/ build/fuzz/work/$$t tests/fuzz/corpus/$$t \
	    2>build/fuzz/$$t.log || { tail -40 build/fuzz/$$t.log; exit 1; }; \
	  tail -1 build/fuzz/$$t.log; \
	done

# The library is compiled once with clang (instrumented, no libFuzzer main) into an archive that
# each target links, so only the objects a target uses are pulled in; headers are tracked (-MMD).
FUZZ_LIB_OBJ := $(LIB_SRC:%.c=build/fuzz/obj/%.o)
FUZZ_ISA_FLAGS :=
build/fuzz/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(subst -fsanitize=fuzzer$(comma),-fsanitize=fuzzer-no-link$(comma),$(FUZZ_FLAGS)) \
	  $(FUZZ_ISA_FLAGS) -MMD -MP -c $< -o $@
build/fuzz/obj/src/cpu/kernels_avx2.o: FUZZ_ISA_FLAGS := $(AVX2_FLAGS)
build/fuzz/obj/src/cpu/kernels_avx512.o: FUZZ_ISA_FLAGS := $(AVX512_FLAGS)
build/fuzz/libclara.a: $(FUZZ_LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^
build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c build/fuzz/libclara.a
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -MMD -MP -o $@ $< build/fuzz/libclara.a $(PKG_LIBS) -lm -lpthread
-include $(shell find build/fuzz/obj -name '*.d' 2>/dev/null) $(wildcard build/fuzz/fuzz_*.d)

FORMAT_FILES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)
format:
	clang-format -i $(FORMAT_FILES)
format-check:
	clang-format --dry-run -Werror $(FORMAT_FILES)

clean:
	rm -rf build

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
