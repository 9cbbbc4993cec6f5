// openai_client.cjs - runs calls through the official OpenAI Node SDK for test_openai.py.
//   node openai_client.cjs SDK_DIR BASE_URL API_KEY < calls.json
// calls.json: [{"op": "chat"|"completion"|"models", "params": {...}}, ...]; params go to the SDK
// as they are (stream: true iterates the SDK's stream). Prints one JSON array: per call, the
// text, finish_reason, usage, our "clara" fields, and for a stream every chunk's arrival time
// (ms since the call began); or {"error": {...}} with the SDK's error class and status.
"use strict";
const path = require("path");
const OpenAI = require(path.resolve(process.argv[2], "node_modules", "openai"));

const client = new OpenAI({baseURL: process.argv[3], apiKey: process.argv[4], maxRetries: 0,
                           timeout: 600000});

function choiceText(kind, c) {
    if (kind === "chat") return (c.message || c.delta || {}).content || "";
    return c.text || "";
}

async function whole(kind, api, params) {
    const r = await api.create(params);
    return {object: r.object, id: r.id, model: r.model, text: choiceText(kind, r.choices[0]),
            finish_reason: r.choices[0].finish_reason, usage: r.usage, clara: r.clara,
            role: kind === "chat" ? r.choices[0].message.role : undefined,
            system_fingerprint: r.system_fingerprint};
}

async function streamed(kind, api, params) {
    const t0 = Date.now();
    const stream = await api.create(params);
    const out = {chunks: [], text: "", times: [], objects: new Set(), roles: []};
    for await (const c of stream) {
        out.times.push(Date.now() - t0);
        out.objects.add(c.object);
        if (c.usage) out.usage = c.usage;
        if (c.clara) out.clara = c.clara;
        const ch = c.choices[0];
        if (!ch) continue;
        if (ch.delta && ch.delta.role) out.roles.push(ch.delta.role);
        out.text += choiceText(kind, ch);
        if (ch.finish_reason) out.finish_reason = ch.finish_reason;
        out.chunks.push(choiceText(kind, ch));
    }
    out.total_ms = Date.now() - t0;
    out.objects = [...out.objects];
    return out;
}

async function call(c) {
    try {
        if (c.op === "models") return {models: (await client.models.list()).data};
        const api = c.op === "chat" ? client.chat.completions : client.completions;
        return c.params.stream ? await streamed(c.op, api, c.params)
                               : await whole(c.op, api, c.params);
    } catch (e) {
        return {error: {api_error: e instanceof OpenAI.APIError, class: e.constructor.name,
                        status: e.status, message: e.message, type: e.type, code: e.code,
                        param: e.param}};
    }
}

(async () => {
    const calls = JSON.parse(require("fs").readFileSync(0, "utf8"));
    const results = [];
    for (const c of calls) results.push(await call(c));
    process.stdout.write(JSON.stringify(results) + "\n");
})();
