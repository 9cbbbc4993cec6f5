// peer_tokenize.mjs - Hugging Face's own JavaScript tokenizer implementation
// (@huggingface/tokenizers, the tokenizer of transformers.js, a port of the Rust `tokenizers`
// library) as a peer for `clara tokenize` (tests/e2e/test_tokenizer_peer.py).
//
//   node tests/peer/peer_tokenize.mjs MODULE_DIR TOKENIZER.json encode|decode INPUT.jsonl
//
// MODULE_DIR is the node_modules folder holding @huggingface/tokenizers. encode: INPUT holds one
// JSON string per line; prints one {"ids":[...]} line per input, without automatic special tokens
// (add_special_tokens=false, as CLaRa calls the tokenizer, spec §3.2). decode: one JSON id array
// per line; prints {"text":"..."} decoded with skip_special_tokens=true and no clean-up (§3.3).
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

const [modDir, tokPath, mode, inPath] = process.argv.slice(2);
const require = createRequire(join(modDir, "noop.js"));
const { Tokenizer } = require("@huggingface/tokenizers");
const tok = new Tokenizer(JSON.parse(readFileSync(tokPath, "utf8")), {
  clean_up_tokenization_spaces: false,
});
const out = [];
for (const line of readFileSync(inPath, "utf8").split("\n")) {
  if (line.trim() === "") continue;
  const x = JSON.parse(line);
  if (mode === "encode") {
    const enc = tok.encode(x, { add_special_tokens: false });
    out.push(JSON.stringify({ ids: Array.from(enc.ids) }));
  } else {
    // an empty list decodes to "" (the JS API refuses empty input)
    const text = x.length
      ? tok.decode(x, { skip_special_tokens: true, clean_up_tokenization_spaces: false })
      : "";
    out.push(JSON.stringify({ text }));
  }
}
process.stdout.write(out.join("\n") + (out.length ? "\n" : ""));
