# clara-server build. `make` builds the CLI, the server name and the demo model; `make test` runs
# every test; `make SANITIZER=address|undefined|thread test` does the same under a sanitizer (in
# its own build directory); `make fuzz` runs each libFuzzer target for FUZZ_SECONDS.

# Plain `make` builds `all`, whatever rule a later section happens to write first.
.DEFAULT_GOAL := all

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

PKGS     := libcjson libmicrohttpd sqlite3 libpq libcurl libcrypto
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS))

CPPFLAGS += -Iinclude -Isrc -D_DEFAULT_SOURCE $(PKG_CFLAGS)
CFLAGS   += -std=c11 -Wall -Wextra -Werror $(OPT) -g -MMD -MP $(SANFLAGS)
LDFLAGS  += $(SANFLAGS)
LDLIBS   += $(PKG_LIBS) -lm -lpthread

LIB_SRC  := $(sort $(wildcard src/*.c src/base/*.c src/convert/*.c src/cpu/*.c src/bench/*.c src/http/*.c \
                    src/store/*.c src/hub/*.c))

# The Vulkan compute backend (src/vulkan/, docs/VULKAN.md) is built when the Vulkan headers
# (pkg-config vulkan) and the GLSL compiler glslc are both present; VULKAN=0 leaves it out.
# Without it the build is CPU only, and make says so in one line. libvulkan is not linked: the
# backend opens it at run time (src/vulkan/loader.c), so the binaries start without it.
VULKAN   ?= auto
ifeq ($(VULKAN),0)
VK_WHY   := VULKAN=0 was given
else
VK_WHY   := $(if $(shell pkg-config --exists vulkan && echo y),,pkg-config finds no vulkan (libvulkan-dev))
VK_WHY   += $(if $(shell command -v glslc),,no glslc (package glslc))
VK_WHY   := $(strip $(VK_WHY))
endif
VK_SHADERS := $(sort $(wildcard src/vulkan/shaders/*.comp))
VK_SPV_C := $(BUILD)/gen/vk_shaders.c
ifeq ($(VK_WHY),)
LIB_SRC  += $(sort $(wildcard src/vulkan/*.c))
CPPFLAGS += -DCLARA_HAVE_VULKAN -DVK_NO_PROTOTYPES $(shell pkg-config --cflags vulkan)
LDLIBS   += -ldl
else
$(info clara: the Vulkan backend is not built ($(VK_WHY)); building for the CPU only)
endif
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
ifeq ($(VK_WHY),)
LIB_OBJ  += $(VK_SPV_C:%.c=$(BUILD)/obj/%.o)
endif
# What this build directory was last built with (on/off), rewritten only when it changes, so the
# objects that test CLARA_HAVE_VULKAN are rebuilt after a switch and no stale test binary runs.
VK_STAMP := $(BUILD)/gen/vulkan.stamp
VK_STATE := $(if $(VK_WHY),off,on)
$(shell mkdir -p $(BUILD)/gen && { echo $(VK_STATE) | cmp -s - $(VK_STAMP) || echo $(VK_STATE) >$(VK_STAMP); })
ifneq ($(VK_WHY),)
$(shell rm -f $(BUILD)/tests/test_vulkan $(BUILD)/tests/test_vk_*)
endif
$(BUILD)/obj/src/backend.o: $(VK_STAMP)
# `clara bench --generate` embeds the project's small trained tokenizer, so random-weight models
# get a real vocabulary without any file at run time.
BENCH_TOK := $(BUILD)/gen/bench_tokenizer.c
LIB_OBJ  += $(BENCH_TOK:%.c=$(BUILD)/obj/%.o)
CLI_SRC  := $(sort $(wildcard cli/*.c))
CLI_SRC  += $(sort $(wildcard server/*.c))
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/obj/%.o)
# GET /openapi.json serves server/openapi.json, embedded at build time.
OPENAPI_C := $(BUILD)/gen/openapi.c
CLI_OBJ  += $(OPENAPI_C:%.c=$(BUILD)/obj/%.o)
# GET / and /ui/ serve the web page written in server/ui/ (server/ui.c), embedded at build time.
UI_FILES := server/ui/index.html server/ui/ui.css server/ui/ui.js
UI_C     := $(BUILD)/gen/ui_assets.c
CLI_OBJ  += $(UI_C:%.c=$(BUILD)/obj/%.o)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
ifneq ($(VK_WHY),)
UNIT_SRC := $(filter-out tests/unit/test_vulkan.c tests/unit/test_vk_%.c,$(UNIT_SRC))
endif
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_NAMES := $(FUZZ_SRC:tests/fuzz/fuzz_%.c=%)
REPLAY_BIN := $(FUZZ_NAMES:%=$(BUILD)/tests/replay_%)

.PHONY: all test unit format format-check fuzz clean bench
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
$(BUILD)/obj/src/cpu/gemv_avx512.o: CFLAGS += $(AVX512_FLAGS)
$(BUILD)/obj/src/cpu/gemv_amx.o: CFLAGS += $(AVX512_FLAGS) -mamx-tile -mamx-int8
$(BUILD)/obj/src/cpu/qgemm_amx.o: CFLAGS += $(AVX512_FLAGS) -mamx-tile -mamx-int8
$(BUILD)/obj/src/cpu/amx.o: CFLAGS += -mamx-tile

# A file's bytes as C initializers (0x12,0x34,...): every file the binaries embed.
C_BYTES = od -An -v -tx1 $(1) | sed 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'

$(BENCH_TOK): tests/fixtures/tokenizer/tokenizer.model
	@mkdir -p $(dir $@)
	{ echo '/* generated by the Makefile from $< */'; echo '#include <stddef.h>'; \
	  echo 'extern const unsigned char bench_tokenizer_model[];'; \
	  echo 'extern const size_t bench_tokenizer_model_len;'; \
	  echo 'const unsigned char bench_tokenizer_model[] = {'; \
	  $(call C_BYTES,$<); echo '};'; \
	  echo 'const size_t bench_tokenizer_model_len = sizeof bench_tokenizer_model;'; } >$@.tmp
	mv $@.tmp $@

# Each compute shader is compiled to SPIR-V and embedded as vk_spv_NAME[] (4-byte aligned, as
# vkCreateShaderModule wants) with vk_spv_NAME_len, NAME the file's base name.
$(BUILD)/gen/spv/%.spv: src/vulkan/shaders/%.comp $(wildcard src/vulkan/shaders/*.glsl)
	@mkdir -p $(dir $@)
	glslc --target-env=vulkan1.1 -O -Werror -o $@.tmp $<
	mv $@.tmp $@

$(VK_SPV_C): $(VK_SHADERS:src/vulkan/shaders/%.comp=$(BUILD)/gen/spv/%.spv)
	@mkdir -p $(dir $@)
	{ echo '/* generated by the Makefile from the shaders in src/vulkan/shaders/ */'; \
	  echo '#include <stddef.h>'; \
	  for f in $^; do \
	    n=vk_spv_$$(basename $$f .spv); \
	    echo "extern const unsigned char $$n[]; extern const size_t $${n}_len;"; \
	    echo "_Alignas(4) const unsigned char $$n[] = {"; \
	    $(call C_BYTES,$$f); echo '};'; \
	    echo "const size_t $${n}_len = sizeof $$n;"; \
	  done; } >$@.tmp
	mv $@.tmp $@

$(OPENAPI_C): server/openapi.json
	@mkdir -p $(dir $@)
	{ echo '/* generated by the Makefile from $< */'; \
	  echo 'extern const char srv_openapi_json[];'; \
	  echo 'const char srv_openapi_json[] = {'; \
	  $(call C_BYTES,$<); echo '0};'; } >$@.tmp
	mv $@.tmp $@

# One array per file, named after it (server/ui/ui.css -> srv_ui_ui_css), with its length.
$(UI_C): $(UI_FILES)
	@mkdir -p $(dir $@)
	{ echo '/* generated by the Makefile from $(UI_FILES) */'; echo '#include <stddef.h>'; \
	  for f in $(UI_FILES); do \
	    n=srv_ui_$$(basename $$f | tr . _); \
	    echo "extern const unsigned char $$n[]; extern const size_t $${n}_len;"; \
	    echo "const unsigned char $$n[] = {"; \
	    $(call C_BYTES,$$f); echo '};'; \
	    echo "const size_t $${n}_len = sizeof $$n;"; \
	  done; } >$@.tmp
	mv $@.tmp $@

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

# `clara bench` (docs/PERFORMANCE.md) on a random-weight ~1B model, generated once.
BENCH_TYPE ?= q4_0
BENCH_ARGS ?= --threads 1,2
BENCH_DIR  := $(BUILD)/bench-1b-$(BENCH_TYPE)
bench: $(BUILD)/clara
	@test -f $(BENCH_DIR)/clara.gguf || \
	  $(BUILD)/clara bench --generate 1b --type $(BENCH_TYPE) --out $(BENCH_DIR)
	$(BUILD)/clara bench --base $(BENCH_DIR)/base.gguf --clara $(BENCH_DIR)/clara.gguf $(BENCH_ARGS)

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
build/fuzz/obj/src/cpu/gemv_avx512.o: FUZZ_ISA_FLAGS := $(AVX512_FLAGS)
build/fuzz/obj/src/cpu/gemv_amx.o: FUZZ_ISA_FLAGS := $(AVX512_FLAGS) -mamx-tile -mamx-int8
build/fuzz/obj/src/cpu/qgemm_amx.o: FUZZ_ISA_FLAGS := $(AVX512_FLAGS) -mamx-tile -mamx-int8
build/fuzz/obj/src/cpu/amx.o: FUZZ_ISA_FLAGS := -mamx-tile
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

# The Vulkan matmul shader's time per weight type (docs/VULKAN.md), where the backend is built.
$(BUILD)/bench/bench_vk_matmul: bench/bench_vk_matmul.c $(BUILD)/libclara.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libclara.a $(LDLIBS)

# bench/store.sh's program: the memory store's ranking, recall and size (direct store access).
$(BUILD)/bench/bench_store: bench/bench_store.c $(BUILD)/libclara.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $< $(BUILD)/libclara.a $(LDLIBS)
