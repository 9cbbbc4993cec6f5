// peer.mjs - llama.cpp (prebuilt, through the npm package node-llama-cpp 3.x) on one GGUF base model:
// prompt processing (ppN: N random token ids in one batch on an empty sequence) and token
// generation (tgN: N tokens decoded one at a time, greedy, after a short prompt): CPU only by
// default; with --gpu vulkan|cuda on that GPU with every layer offloaded (gpuLayers "max"), through
// the prebuilt package @node-llama-cpp/linux-x64-vulkan (or linux-x64-cuda and linux-x64-cuda-ext),
// failing when that binary cannot run rather than falling back to the CPU.
// Driven by bench/peer.sh, which installs the package; usable alone:
//
//   node bench/peer.mjs --module-dir build/peer-llama --model F.gguf [--threads 1,2] [--reps 3]
//        [--warmup 1] [--pp 256,512] [--tg 32] [--tg-prompt 16] [--flash-attn auto|on|off]
//        [--seed 1] [--gpu off|vulkan|cuda] [--verbose]  (--pp 0: no pp; --tg 0: no tg)
//   node bench/peer.mjs --report PEER.json [--also PEER.json ...] [--ours THREADS=FILE ...]
//        [--ours-note TEXT] [--json]
//
// In a report, each --report starts a round; --also adds more llama.cpp results of that round
// (merged per thread count: pp from one run, tg from another), and --ours files belong to the
// round before them (the same thread count may come twice: `clara bench --parts compress` and
// `--parts answer`).
//
// stdout: one JSON line; stderr: progress. Every repetition starts from a cleared sequence (no KV
// reuse); a repetition's figure is tokens / wall time of the evaluation call; the report is the
// median. cpu_per_wall (process CPU time / wall time over the timed calls) shows how many threads
// were really busy: about T when T threads compute, less when another process takes the cores.
import { readFileSync, statSync, openSync, readSync, closeSync } from "node:fs";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import os from "node:os";

function die(msg, code = 2) {
    process.stderr.write(`peer.mjs: ${msg}\n`);
    process.exit(code);
}

// The CPU the figures are measured on, from /proc/cpuinfo (Linux; elsewhere only what node's os
// module knows): vendor, family, model, name, and the kind `clara bench` reports for it (the rules
// of src/cpu/params.c: AMD family 25 with AVX-512 zen4, AMD family 26 zen5, Intel with AVX-512
// F/BW/VL intel-avx512, Intel with AVX2 intel-avx2, else other).
function cpuInfo() {
    let text = "";
    try { text = readFileSync("/proc/cpuinfo", "utf8"); } catch { /* not Linux */ }
    const first = text.split("\n\n")[0] ?? "";
    const field = (k) => first.match(new RegExp(`^${k}\\s*:\\s*(.*)$`, "m"))?.[1]?.trim() ?? null;
    const flags = new Set((field("flags") ?? "").split(/\s+/));
    const vendor = field("vendor_id"), family = Number(field("cpu family") ?? NaN), model = Number(field("model") ?? NaN);
    const avx512 = ["avx512f", "avx512bw", "avx512vl"].every((f) => flags.has(f));
    let kind = "other";
    if (vendor === "AuthenticAMD" && family === 25 && avx512) kind = "zen4";
    else if (vendor === "AuthenticAMD" && family === 26) kind = "zen5";
    else if (vendor === "GenuineIntel" && avx512) kind = "intel-avx512";
    else if (vendor === "GenuineIntel" && flags.has("avx2")) kind = "intel-avx2";
    return {
        vendor, family: Number.isFinite(family) ? family : null, model: Number.isFinite(model) ? model : null,
        name: field("model name") ?? os.cpus()[0]?.model ?? null, kind,
    };
}
const cpuLabel = (c) => `${c?.name ?? "?"} (${c?.vendor ?? "?"} family ${c?.family ?? "?"} model ${c?.model ?? "?"}, kind ${c?.kind ?? "?"})`;
const cpuShort = (c) => `${c?.kind ?? "?"} ${c?.family ?? "?"}/${c?.model ?? "?"}`;

// --gpu: off (the CPU, as before) or a backend node-llama-cpp has a prebuilt Linux binary for
const GPUS = ["off", "vulkan", "cuda"];
const gpuPackages = (gpu) => (gpu === "cuda"
    ? [`@node-llama-cpp/${process.platform}-${process.arch}-cuda`, `@node-llama-cpp/${process.platform}-${process.arch}-cuda-ext`]
    : gpu === "vulkan" ? [`@node-llama-cpp/${process.platform}-${process.arch}-vulkan`] : [`@node-llama-cpp/${process.platform}-${process.arch}`]);

function parseArgs(argv) {
    const o = { moduleDir: "build/peer-llama", model: null, threads: [2], reps: 3, warmup: 1,
        pp: [256, 512], tg: 32, tgPrompt: 16, flashAttn: "auto", seed: 1, gpu: "off", verbose: false };
    const list = (v, name) => {
        const r = String(v).split(",").map((s) => Number(s));
        if (r.length === 0 || r.some((n) => !Number.isInteger(n) || n < 1)) die(`${name}: expected positive integers, got '${v}'`);
        return r;
    };
    const int = (v, name, min) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < min) die(`${name}: expected an integer >= ${min}, got '${v}'`);
        return n;
    };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const val = () => {
            if (i + 1 >= argv.length) die(`${a} needs a value`);
            return argv[++i];
        };
        switch (a) {
            case "--module-dir": o.moduleDir = val(); break;
            case "--model": o.model = val(); break;
            case "--threads": o.threads = list(val(), a); break;
            case "--reps": o.reps = int(val(), a, 1); break;
            case "--warmup": o.warmup = int(val(), a, 0); break;
            case "--pp": { const v = val(); o.pp = v === "0" ? [] : list(v, a); break; }
            case "--tg": o.tg = int(val(), a, 0); break;
            case "--tg-prompt": o.tgPrompt = int(val(), a, 1); break;
            case "--flash-attn": o.flashAttn = val(); break;
            case "--seed": o.seed = int(val(), a, 0); break;
            case "--gpu": o.gpu = val(); break;
            case "--verbose": o.verbose = true; break;
            default: die(`unknown option '${a}'`);
        }
    }
    if (!GPUS.includes(o.gpu)) die(`--gpu: ${GPUS.join(", ")}, got '${o.gpu}'`);
    if (!o.model) die("--model F.gguf is required");
    if (!["auto", "on", "off"].includes(o.flashAttn)) die(`--flash-attn: auto, on or off, got '${o.flashAttn}'`);
    return o;
}

const median = (xs) => {
    const s = [...xs].sort((a, b) => a - b);
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const round = (x, d = 2) => Math.round(x * 10 ** d) / 10 ** d;

// xorshift32: the same ids on every run and machine for a given seed.
function makeRng(seed) {
    let s = (seed * 2654435761 + 1) >>> 0 || 1;
    return () => {
        s ^= s << 13; s >>>= 0;
        s ^= s >>> 17;
        s ^= s << 5; s >>>= 0;
        return s;
    };
}

function gitBundleHead(path) {
    // "# v2 git bundle\n<sha> HEAD\n": the llama.cpp commit the package's binaries were built from.
    try {
        const fd = openSync(path, "r");
        const buf = Buffer.alloc(256);
        const n = readSync(fd, buf, 0, buf.length, 0);
        closeSync(fd);
        const m = /^([0-9a-f]{40}) /m.exec(buf.subarray(0, n).toString("latin1"));
        return m ? m[1] : null;
    } catch {
        return null;
    }
}

async function timed(fn) {
    const c0 = process.cpuUsage();
    const t0 = process.hrtime.bigint();
    await fn();
    const wall = Number(process.hrtime.bigint() - t0) / 1e9;
    const c = process.cpuUsage(c0);
    return { wall, cpu: (c.user + c.system) / 1e6 };
}

async function main() {
    const o = parseArgs(process.argv.slice(2));
    const pkgDir = resolve(o.moduleDir, "node_modules", "node-llama-cpp");
    let pkg;
    try {
        pkg = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8"));
    } catch {
        die(`node-llama-cpp is not installed under ${o.moduleDir} (run bench/peer.sh, which installs it)`);
    }
    const nlc = await import(pathToFileURL(join(pkgDir, "dist", "index.js")).href);
    const maxThreads = Math.max(...o.threads);
    const logLevel = o.verbose ? "info" : "error";
    let llama;
    try {
        llama = await nlc.getLlama({
            gpu: o.gpu === "off" ? false : o.gpu, build: "never", usePrebuiltBinaries: true, skipDownload: true,
            maxThreads, logLevel, progressLogs: false,
        });
    } catch (e) {
        const kind = e instanceof nlc.NoBinaryFoundError
            ? `no prebuilt llama.cpp ${o.gpu === "off" ? "CPU" : o.gpu} binary works here (is ${gpuPackages(o.gpu).join(" + ")} installed under ${o.moduleDir}?${o.gpu === "off" ? "" : " does the machine have the GPU and its driver?"})`
            : "llama.cpp did not start";
        die(`${kind} (node-llama-cpp ${pkg.version}; building from source is off): ${e.name}: ${e.message}`, 3);
    }
    if (llama.buildType !== "prebuilt")
        die(`node-llama-cpp picked a '${llama.buildType}' binary, not its prebuilt one; remove ${pkgDir}/llama/localBuilds`, 3);
    const wantGpu = o.gpu === "off" ? false : o.gpu;
    if (llama.gpu !== wantGpu) die(`expected ${wantGpu === false ? "a CPU-only backend" : `gpu=${wantGpu}`}, got gpu=${llama.gpu}`, 3);
    const gpuDevices = wantGpu === false ? [] : await llama.getGpuDeviceNames();
    if (wantGpu !== false && gpuDevices.length === 0) die(`llama.cpp's ${wantGpu} backend sees no GPU device`, 3);

    let model;
    try {
        // on a GPU every layer is offloaded ("max" fails rather than leaving layers on the CPU)
        model = await llama.loadModel({ modelPath: resolve(o.model), gpuLayers: wantGpu === false ? 0 : "max" });
    } catch (e) {
        die(`llama.cpp could not load ${o.model}: ${e.message}${o.verbose ? "" : " (rerun with --verbose for llama.cpp's log)"}`, 4);
    }
    const md = model.fileInfo?.metadata ?? {};
    const arch = md.general?.architecture ?? null;
    const nVocab = md[arch]?.vocab_size ?? md.tokenizer?.ggml?.tokens?.length ?? 32000;
    const bos = model.tokens?.bos ?? null;
    const eos = model.tokens?.eos ?? null;
    const rng = makeRng(o.seed);
    const randomIds = (n) => {
        const ids = [];
        while (ids.length < n) {
            const t = 3 + (rng() % (nVocab - 3));
            if (t !== bos && t !== eos) ids.push(t);
        }
        return ids;
    };

    const maxPp = Math.max(0, ...o.pp);
    // room past the longest evaluation: node-llama-cpp shifts the context (drops tokens) when a
    // sequence would fill it
    const ctxSize = Math.max(maxPp, o.tgPrompt + o.tg + 1) + 64;
    const results = [];
    for (const threads of o.threads) {
        const context = await model.createContext({
            contextSize: ctxSize, batchSize: Math.max(maxPp, o.tgPrompt), sequences: 1,
            threads: { ideal: threads, min: threads },
            flashAttention: o.flashAttn === "auto" ? "auto" : o.flashAttn === "on",
        });
        const seq = context.getSequence();
        const entry = { threads, n_threads_reported: null, context_size: context.contextSize,
            batch_size: context.batchSize, flash_attention: context.flashAttention };
        const record = (name, n, runs) => {
            const tps = runs.map((r) => n / r.wall);
            entry[name] = {
                tokens: n, tok_s: round(median(tps)), runs_tok_s: tps.map((x) => round(x)),
                cpu_per_wall: round(median(runs.map((r) => r.cpu / r.wall))),
            };
            process.stderr.write(`peer.mjs: threads ${threads} ${name}: ${entry[name].tok_s} tok/s ` +
                `(runs ${entry[name].runs_tok_s.join(", ")}; cpu/wall ${entry[name].cpu_per_wall})\n`);
        };
        for (const n of o.pp) {
            const ids = randomIds(n);
            const runs = [];
            for (let r = 0; r < o.warmup + o.reps; r++) {
                await seq.clearHistory();
                const m = await timed(() => seq.evaluateWithoutGeneratingNewTokens(ids));
                if (seq.nextTokenIndex !== n) die(`pp${n}: the sequence holds ${seq.nextTokenIndex} tokens after evaluation, expected ${n}`);
                if (r >= o.warmup) runs.push(m);
            }
            entry.n_threads_reported = context.currentThreads;
            record(`pp${n}`, n, runs);
        }
        if (o.tg > 0) {
            const prompt = [...(bos != null ? [bos] : []), ...randomIds(o.tgPrompt - (bos != null ? 1 : 0))];
            const runs = [];
            for (let r = 0; r < o.warmup + o.reps; r++) {
                await seq.clearHistory();
                // greedy; EOS does not stop it (random weights may pick it)
                const it = seq.evaluate(prompt, { temperature: 0, yieldEogToken: true });
                const first = await it.next(); // prompt + first sampled token: not timed
                if (first.done) die("tg: no token generated");
                let got = 0;
                const m = await timed(async () => {
                    for (; got < o.tg; got++) if ((await it.next()).done) break;
                });
                await it.return();
                if (got !== o.tg) die(`tg: generation stopped after ${got} of ${o.tg} tokens`);
                if (r >= o.warmup) runs.push(m);
            }
            entry.n_threads_reported = context.currentThreads;
            record(`tg${o.tg}`, o.tg, runs);
        }
        await seq.dispose();
        await context.dispose();
        results.push(entry);
    }

    let size = null;
    try { size = statSync(o.model).size; } catch { /* reported as null */ }
    const out = {
        engine: "llama.cpp",
        package: `node-llama-cpp@${pkg.version}`,
        llama_cpp: { ...llama.llamaCppRelease, commit: gitBundleHead(join(pkgDir, "llama", "gitRelease.bundle")) },
        build_type: llama.buildType,
        gpu: wantGpu === false ? "off" : wantGpu,
        gpu_devices: gpuDevices,
        gpu_layers: wantGpu === false ? 0 : model.gpuLayers ?? null,
        system_info: llama.systemInfo.trim(),
        cpu: cpuInfo(),
        model: { path: o.model, bytes: size, architecture: arch, type: model.typeDescription, n_vocab: nVocab },
        reps: o.reps, warmup: o.warmup, tg_prompt: o.tgPrompt, seed: o.seed,
        results,
    };
    process.stdout.write(JSON.stringify(out) + "\n");
    await model.dispose();
    await llama.dispose();
}

// ---- report: the peer's JSON (and ours, from `clara bench --json`, per thread count) as a table,
// ratios ours/theirs and one combined JSON line. Ours is read tolerantly: `clara bench` is young and
// any key may be missing; what is missing prints as n/a.
function readJson(path) {
    // the last line that parses as a JSON object
    let lines;
    try {
        lines = readFileSync(path, "utf8").trim().split("\n");
    } catch (e) {
        return { error: e.message };
    }
    for (const l of [...lines].reverse()) {
        try {
            const v = JSON.parse(l);
            if (v && typeof v === "object" && !Array.isArray(v)) return { value: v };
        } catch { /* not this line */ }
    }
    const last = lines.pop() ?? "";
    return { error: last ? `no JSON object in its output (last line: ${last.slice(0, 160)})` : "empty output" };
}
const num = (x) => (typeof x === "number" && Number.isFinite(x) ? x : null);
const fmt = (x, d = 1) => (x == null ? "n/a" : x.toFixed(d));
const ratio = (a, b) => (a != null && b != null && b > 0 ? round(a / b, 3) : null);

function oursFor(ours, threads) {
    const res = Array.isArray(ours?.results) ? ours.results : ours?.results ? [ours.results] : [];
    const hit = res.find((r) => num(r?.threads ?? r?.n_threads) === threads) ?? (res.length === 1 ? res[0] : null);
    if (!hit) return null;
    const comp = Array.isArray(hit.compress) ? hit.compress : [];
    const c16 = comp.find((c) => num(c?.batch) === 16) ?? null;
    return {
        compress_b16_tok_s: num(c16?.tokens_per_s),
        compress_b16_docs_s: num(c16?.docs_per_s),
        compress: comp.map((c) => ({ batch: num(c?.batch), tokens_per_s: num(c?.tokens_per_s), docs_per_s: num(c?.docs_per_s) })),
        prefill_tok_s: num(hit.answer?.prefill_tok_s),
        decode_tok_s: num(hit.answer?.decode_tok_s),
        // the machine's limits, measured by the same run just before (absent with --no-roofline)
        decode_roofline_tok_s: num(hit.answer?.decode_roofline_tok_s),
        mem_read_gbs: num((ours?.machine?.threads ?? []).find((m) => num(m?.threads) === threads)?.mem_read_gbs),
    };
}

// Ours for one thread count from one or more `clara bench --json` outputs (--parts compress and
// --parts answer): compress rows of all of them, each other figure from the first that has it.
function oursMerged(values, threads) {
    const parts = values.map((v) => oursFor(v, threads)).filter(Boolean);
    if (!parts.length) return null;
    const first = (k) => parts.map((x) => x[k]).find((x) => x != null) ?? null;
    const out = { compress: parts.flatMap((x) => x.compress) };
    for (const k of ["compress_b16_tok_s", "compress_b16_docs_s", "prefill_tok_s", "decode_tok_s"]) out[k] = first(k);
    // the roofline of the run that measured the decode (the compression's run measures its own)
    const dec = parts.find((x) => x.decode_tok_s != null);
    out.decode_roofline_tok_s = dec?.decode_roofline_tok_s ?? null;
    out.mem_read_gbs = dec?.mem_read_gbs ?? null;
    return out;
}

// The rows of one round: per thread count, theirs, ours and the ratios ours/theirs.
function roundRows(p, oursFiles, note) {
    const rows = [];
    for (const r of p.results ?? []) {
        const t = r.threads;
        const tgKey = Object.keys(r).find((k) => /^tg\d+$/.test(k));
        const theirs = { pp256: num(r.pp256?.tok_s), pp512: num(r.pp512?.tok_s), tg: num(tgKey ? r[tgKey]?.tok_s : null) };
        let ours = null, oursNote = note;
        if (oursFiles.has(t)) {
            const got = oursFiles.get(t).map(readJson);
            const bad = got.find((o) => !o.value);
            if (!bad) {
                ours = oursMerged(got.map((o) => o.value), t);
                if (!ours) oursNote = `clara bench output has no results for ${t} threads`;
                else if (ours.compress_b16_tok_s == null && ours.decode_tok_s == null) {
                    oursNote = "clara bench output has neither compress[batch 16].tokens_per_s nor answer.decode_tok_s";
                    ours = null;
                }
            } else oursNote = `clara bench failed: ${bad.error}`;
        }
        rows.push({
            threads: t, cpu: cpuShort(p.cpu), theirs, ours, ours_note: ours ? null : oursNote ?? "not run (no --clara)",
            ratios: {
                compress_b16_vs_pp256: ratio(ours?.compress_b16_tok_s, theirs.pp256),
                compress_b16_vs_pp512: ratio(ours?.compress_b16_tok_s, theirs.pp512),
                decode_vs_tg: ratio(ours?.decode_tok_s, theirs.tg),
            },
            roofline: rooflineOf(ours, theirs.tg),
        });
    }
    return rows;
}

// Both decodes as a share of the roofline ours measured beside its answer (read GB/s over the
// bytes read per token): llama.cpp reads the same base weights per token, so where both sit near
// 100% the machine's bandwidth, not either program, sets the round's ratio.
function rooflineOf(ours, tg) {
    const roof = ours?.decode_roofline_tok_s;
    if (roof == null || !(roof > 0)) return null;
    const pct = (x) => (x != null ? round((100 * x) / roof, 1) : null);
    return { read_gbs: ours.mem_read_gbs != null ? round(ours.mem_read_gbs, 1) : null, tok_s: round(roof, 2),
        ours_pct: pct(ours.decode_tok_s), theirs_pct: pct(tg) };
}

// Over rounds: per thread count the median of every figure, and of every ratio the median and the
// minimum of the per-round ratios. A ratio pairs figures taken seconds apart (peer.sh's order), not
// rounds apart: on a machine whose memory bandwidth drifts, that is the fair pairing.
function summaryRows(rounds) {
    const med = (xs) => {
        const v = xs.filter((x) => x != null);
        return v.length ? round(median(v), 3) : null;
    };
    const lo = (xs) => {
        const v = xs.filter((x) => x != null);
        return v.length ? Math.min(...v) : null;
    };
    const out = [];
    for (const first of rounds[0]) {
        const t = first.threads;
        const all = rounds.map((rows) => rows.find((r) => r.threads === t)).filter(Boolean);
        const pick = (f) => all.map(f);
        const withOurs = all.filter((r) => r.ours);
        out.push({
            threads: t,
            cpu: first.cpu,
            rounds: all.length,
            theirs: { pp256: med(pick((r) => r.theirs.pp256)), pp512: med(pick((r) => r.theirs.pp512)), tg: med(pick((r) => r.theirs.tg)) },
            ours: withOurs.length ? {
                compress_b16_tok_s: med(withOurs.map((r) => r.ours.compress_b16_tok_s)),
                decode_tok_s: med(withOurs.map((r) => r.ours.decode_tok_s)),
            } : null,
            ours_note: withOurs.length ? null : all[0].ours_note,
            ratios: Object.fromEntries(Object.keys(first.ratios).map((k) => [k, med(pick((r) => r.ratios[k]))])),
            roofline: all.some((r) => r.roofline) ? Object.fromEntries(["read_gbs", "tok_s", "ours_pct", "theirs_pct"]
                .map((k) => [k, med(pick((r) => r.roofline?.[k] ?? null))])) : null,
            min_ratios: Object.fromEntries(Object.keys(first.ratios).map((k) => [k, lo(pick((r) => r.ratios[k]))])),
        });
    }
    return out;
}

// One llama.cpp result from several runs of the same round: the first run's header, and per
// thread count the figures of every run (each run's own ppN / tgN keys).
function mergePeers(runs) {
    const out = { ...runs[0], results: [] };
    for (const run of runs)
        for (const r of run.results ?? []) {
            const hit = out.results.find((x) => x.threads === r.threads);
            if (hit) Object.assign(hit, Object.fromEntries(Object.entries(r).filter(([k]) => /^(pp|tg)\d+$/.test(k))));
            else out.results.push({ ...r });
        }
    return out;
}

function report(argv) {
    // each --report starts a round; the --also and --ours files after it belong to that round
    const rounds = [];
    let note = null, json = false;
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const val = () => (i + 1 < argv.length ? argv[++i] : die(`${a} needs a value`));
        if (a === "--report") rounds.push({ paths: [val()], ours: new Map() });
        else if (a === "--also") {
            if (!rounds.length) die("--also needs a --report before it");
            rounds[rounds.length - 1].paths.push(val());
        } else if (a === "--ours") {
            if (!rounds.length) die("--ours needs a --report before it");
            const [t, ...f] = val().split("=");
            const m = rounds[rounds.length - 1].ours;
            m.set(Number(t), [...(m.get(Number(t)) ?? []), f.join("=")]);
        } else if (a === "--ours-note") note = val();
        else if (a === "--json") json = true;
        else die(`unknown option '${a}'`);
    }
    const peers = rounds.map((r) => {
        const got = r.paths.map((path) => {
            const peer = readJson(path);
            if (!peer.value) die(`${path}: ${peer.error}`);
            return peer.value;
        });
        return mergePeers(got);
    });
    // every figure is labelled with the CPU it was measured on: the peer's record of it (older peer
    // files have none: this machine's), with the kind and name `clara bench` reported where ours ran
    for (const [i, q] of peers.entries()) {
        q.cpu = q.cpu ?? cpuInfo();
        const oursCpu = [...rounds[i].ours.values()].flat().map(readJson).map((o) => o.value?.cpu).find(Boolean);
        if (oursCpu?.kind) q.cpu = { ...q.cpu, kind: oursCpu.kind, kind_from: "clara bench" };
    }
    const perRound = rounds.map((r, i) => roundRows(peers[i], r.ours, note));
    const p = peers[0];
    const rows = perRound.length > 1 ? summaryRows(perRound) : perRound[0];
    const lines = [];
    const m = p.model ?? {};
    lines.push(`cpu: ${cpuLabel(p.cpu)}` +
        (peers.some((q) => cpuShort(q.cpu) !== cpuShort(p.cpu)) ? " (rounds on different CPUs: see each row)" : ""));
    lines.push(`peer: llama.cpp ${p.llama_cpp?.release ?? "?"} (commit ${p.llama_cpp?.commit ?? "?"}, ${p.package}, ${p.build_type}), ` +
        (p.gpu && p.gpu !== "off" ? `on ${p.gpu} ${(p.gpu_devices ?? []).join(" + ") || "?"} (${p.gpu_layers ?? "?"} layers offloaded), ` : "") +
        `${m.type ?? "?"} ${m.path} (${m.bytes != null ? (m.bytes / 1e9).toFixed(2) + " GB" : "?"}), ` +
        `median of ${p.reps} after ${p.warmup} warm-up, tg after a ${p.tg_prompt}-token prompt` +
        (perRound.length > 1 ? `, ${perRound.length} rounds` : "") +
        (rounds.some((r) => r.paths.length > 1) ? " (each of ours next to its llama.cpp figure, who goes first alternating)" : ""));
    const tgName = (p.results?.[0] && Object.keys(p.results[0]).find((k) => /^tg\d+$/.test(k))) ?? "tg";
    lines.push(`| cpu | threads | llama.cpp pp256 tok/s | pp512 | ${tgName} | cpu/wall pp512, ${tgName} | ours compress b16 tok/s | ours/pp256 | ours/pp512 | ours decode tok/s | ours/tg | read GB/s | decode roofline tok/s (ours %, llama.cpp %) |`);
    lines.push("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    const line = (label, r, pr) =>
        lines.push(`| ${r.cpu} | ${label} | ${fmt(r.theirs.pp256)} | ${fmt(r.theirs.pp512)} | ${fmt(r.theirs.tg)} | ` +
            `${fmt(num(pr.pp512?.cpu_per_wall), 2)}, ${fmt(num(pr[tgName]?.cpu_per_wall), 2)} | ` +
            `${fmt(r.ours?.compress_b16_tok_s)} | ${fmt(r.ratios.compress_b16_vs_pp256, 2)} | ${fmt(r.ratios.compress_b16_vs_pp512, 2)} | ` +
            `${fmt(r.ours?.decode_tok_s)} | ${fmt(r.ratios.decode_vs_tg, 2)} | ${fmt(r.roofline?.read_gbs)} | ` +
            (r.roofline ? `${fmt(r.roofline.tok_s)} (${fmt(r.roofline.ours_pct, 0)}%, ${fmt(r.roofline.theirs_pct, 0)}%) |` : "n/a |"));
    const peerFor = (q, t) => (q.results ?? []).find((x) => x.threads === t) ?? {};
    if (perRound.length > 1)
        perRound.forEach((rr, i) => rr.forEach((r) => line(`${r.threads} (round ${i + 1})`, r, peerFor(peers[i], r.threads))));
    for (const r of rows) line(perRound.length > 1 ? `${r.threads} (median)` : `${r.threads}`, r, perRound.length > 1 ? {} : peerFor(p, r.threads));
    for (const r of rows)
        if (r.min_ratios)
            lines.push(`threads ${r.threads}, ${r.rounds} rounds: a median row's ratio is the median of the rounds' ratios; ` +
                `the lowest: ours/pp256 ${fmt(r.min_ratios.compress_b16_vs_pp256, 2)}, ` +
                `ours/pp512 ${fmt(r.min_ratios.compress_b16_vs_pp512, 2)}, ours/tg ${fmt(r.min_ratios.decode_vs_tg, 2)}`);
    for (const r of rows) if (!r.ours) lines.push(`ours (${r.threads} thread${r.threads > 1 ? "s" : ""}): n/a - ${r.ours_note}`);
    // prompt processing keeps every thread busy; in generation llama.cpp's threads also wait between
    // tokens (~1.5 of 2 on an idle 2-vCPU machine), hence the lower bar there
    // (on a GPU the CPU mostly waits: no such check)
    for (const pr of peers.filter((q) => (q.gpu ?? "off") === "off").flatMap((q) => q.results ?? [])) {
        const low = Object.entries(pr).filter(([k, v]) => {
            const b = num(v?.cpu_per_wall);
            return b != null && b < (/^tg/.test(k) ? 0.6 : 0.8) * pr.threads;
        });
        if (low.length)
            lines.push(`warning: with ${pr.threads} thread${pr.threads > 1 ? "s" : ""} llama.cpp kept only ` +
                low.map(([k, v]) => `${fmt(v.cpu_per_wall, 2)} (${k})`).join(", ") +
                " cores busy (cpu/wall): the machine is not idle and those figures read low; rerun when idle");
    }
    const table = lines.join("\n") + "\n";
    const out = { cpu: p.cpu, peer: p, comparison: rows };
    if (perRound.length > 1) out.rounds = perRound.map((rr, i) => ({ peer: peers[i], comparison: rr }));
    const combined = JSON.stringify(out) + "\n";
    if (json) {
        process.stderr.write(table);
        process.stdout.write(combined);
    } else process.stdout.write(table + combined);
}

if (process.argv.includes("--report")) report(process.argv.slice(2));
else main().catch((e) => die(e?.stack ?? String(e), 1));
