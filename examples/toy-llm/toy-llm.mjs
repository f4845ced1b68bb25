#!/usr/bin/env node
// A deterministic "toy LLM" for migration tests and the demo. No dependencies.
//
//   node toy-llm.mjs --prompt-tokens N --state-mib M --out FILE --tokens T --interval-ms I [--seed S]
//   node toy-llm.mjs --reference --prompt-tokens N --state-mib M --tokens T [--seed S]
//
// --weights-mib W adds "weights": W MiB made from the seed alone (the model's weights, which a real server loads from
// disk), sampled by every decode step. --control-port P serves the cooperation endpoints spotwatch calls around a
// checkpoint (`spotwatch run --prepare-url http://127.0.0.1:P/prepare --resume-url http://127.0.0.1:P/resume`):
// POST /prepare stops decoding after the current token and releases the weights (they are rebuilt, not moved);
// POST /resume rebuilds them and decodes on. Both are written to FILE as `# prepare …` / `# resume …` lines.
// POST /stage {"directory"} (`spotwatch run --stage-url …/stage`) writes the cache as it is now to DIR/cache.bin and
// journals every later write to it in memory; a prepare that names the "stagedDirectory" then releases the cache too
// (only the journal travels in the checkpoint), and resume reads cache.bin back from the "stagedDirectory" it names
// and replays the journal — the pre-copy a serving engine does with its KV cache's filled prefix. `# stage …` line.
//
// Prefill is deliberately expensive (a fixed CPU loop of about a second, --prefill-rounds) and builds an
// in-memory "KV cache": a Uint32Array of M MiB filled deterministically from the prompt. Decode then emits
// one token every I ms; each token is a hash of the previous token and a strided sample spanning the whole
// cache, and each step writes back into the cache, so a process whose memory was not carried over exactly
// cannot produce the same stream. Tokens go to FILE as `index token` lines through ONE file descriptor kept
// open in append mode for the whole run; `# prefill N` (N = how many times this process ran prefill) is
// written to FILE and stderr, `# done T` at the end.
//
// --reference prints the first T `index token` lines of an uninterrupted run to stdout, without sleeping:
// the stream a migrated run must reproduce exactly (no gap, no repeat).
//
// To be checkpointable by CRIU start it without a terminal, in its own session, stdio on files or /dev/null:
//   setsid node toy-llm.mjs ... </dev/null >/dev/null 2>toy.err &
import { closeSync, openSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { createServer } from 'node:http';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

const VOCAB = 50257;
const SAMPLES = 4096;

function parseArgs(argv) {
  const o = { promptTokens: 128, stateMib: 64, out: '', tokens: 100, intervalMs: 20, seed: 1, prefillRounds: 400, reference: false, weightsMib: 0, controlPort: 0 };
  const names = {
    '--prompt-tokens': 'promptTokens', '--state-mib': 'stateMib', '--tokens': 'tokens',
    '--interval-ms': 'intervalMs', '--seed': 'seed', '--prefill-rounds': 'prefillRounds',
    '--weights-mib': 'weightsMib', '--control-port': 'controlPort',
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--reference') o.reference = true;
    else if (a === '--out') o.out = argv[++i] ?? '';
    else if (a in names) {
      const v = Number(argv[++i]);
      if (!Number.isInteger(v) || v < 0) fail(`${a} needs a non-negative integer`);
      o[names[a]] = v;
    } else fail(`unknown argument ${a}`);
  }
  if (!o.reference && !o.out) fail('--out FILE is required (or --reference)');
  if (o.promptTokens < 1 || o.stateMib < 1) fail('--prompt-tokens and --state-mib must be at least 1');
  return o;
}

function fail(msg) {
  process.stderr.write(`toy-llm: ${msg}\n`);
  process.exit(2);
}

function mix(h, v) {
  h = Math.imul(h ^ v, 0x5bd1e995);
  return (h ^ (h >>> 15)) >>> 0;
}

/** The prompt: N pseudo-random token ids from the seed. */
function makePrompt(n, seed) {
  const p = new Uint32Array(n);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    p[i] = x % VOCAB;
  }
  return p;
}

/** Expensive, deterministic prefill: many passes over the prompt, then the cache is filled from the digest. */
function prefill(prompt, stateMib, rounds) {
  let h = 0x811c9dc5;
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < 1 << 16; k++) {
      for (let i = 0; i < prompt.length; i += 8) h = mix(h, prompt[i] + r + k);
    }
  }
  const cache = new Uint32Array(stateMib * 262144);
  let x = h || 1;
  for (let i = 0; i < cache.length; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    cache[i] = x ^ prompt[i % prompt.length];
  }
  return { cache, digest: h };
}

/** The "weights": W MiB from the seed alone (what a real server would load from disk), or null for none. */
function makeWeights(mib, seed) {
  if (mib === 0) return null;
  const w = new Uint32Array(mib * 262144);
  let x = (seed * 0x2545f491) >>> 0 || 7;
  for (let i = 0; i < w.length; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    w[i] = x;
  }
  return w;
}

/** One decode step: the next token from the previous one and a sample spanning the whole cache (and weights). */
function nextToken(cache, prev, index, weights, journal) {
  const stride = Math.max(1, Math.floor(cache.length / SAMPLES));
  let h = (prev ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0;
  for (let k = prev % stride; k < cache.length; k += stride) h = mix(h, cache[k]);
  if (weights) {
    const ws = Math.max(1, Math.floor(weights.length / SAMPLES));
    for (let k = h % ws; k < weights.length; k += ws) h = mix(h, weights[k]);
  }
  const at = (Math.imul(index, 7919) + h) % cache.length >>> 0;
  cache[at] ^= h;
  if (journal) journal.push(at, h);
  return h % VOCAB;
}

const o = parseArgs(process.argv.slice(2));
const prompt = makePrompt(o.promptTokens, o.seed);
let prefillCount = 0;
const t0 = Date.now();
let { cache, digest } = prefill(prompt, o.stateMib, o.prefillRounds);
prefillCount++;
const prefillMs = Date.now() - t0;
let weights = makeWeights(o.weightsMib, o.seed);

if (o.reference) {
  let prev = prompt[prompt.length - 1];
  const lines = [];
  for (let i = 0; i < o.tokens; i++) {
    prev = nextToken(cache, prev, i, weights);
    lines.push(`${i} ${prev}\n`);
  }
  process.stdout.write(lines.join(''));
} else {
  const fd = openSync(o.out, 'a');
  writeSync(fd, `# prefill ${prefillCount} pid=${process.pid} digest=${digest} ms=${prefillMs}\n`);
  process.stderr.write(`toy-llm: prefill ${prefillCount} done in ${prefillMs} ms (pid ${process.pid})\n`);
  let prev = prompt[prompt.length - 1];
  let i = 0;
  let paused = false;
  let timer;
  /** Writes to the cache since it was staged (index, value pairs), or null when it is not staged. */
  let journal = null;
  const step = () => {
    timer = undefined;
    if (paused) return;
    if (o.tokens > 0 && i >= o.tokens) {
      writeSync(fd, `# done ${i}\n`);
      closeSync(fd);
      process.exit(0);
    }
    prev = nextToken(cache, prev, i, weights, journal);
    writeSync(fd, `${i} ${prev}\n`);
    i++;
    timer = setTimeout(step, o.intervalMs);
  };
  step();
  if (o.controlPort > 0) serveControl(o.controlPort, {
    stage({ directory }) {
      if (typeof directory !== 'string') throw new Error('stage needs a "directory"');
      const t = Date.now();
      writeFileSync(join(directory, 'cache.bin'), new Uint8Array(cache.buffer, cache.byteOffset, cache.byteLength));
      journal = [];
      writeSync(fd, `# stage at token ${i} bytes=${cache.byteLength} ms=${Date.now() - t}\n`);
      return { token: i, stagedBytes: cache.byteLength };
    },
    prepare({ stagedDirectory }) {
      paused = true;
      clearTimeout(timer);
      timer = undefined;
      let released = weights ? weights.byteLength : 0;
      weights = null;
      if (journal && stagedDirectory) {
        // The target holds the cache as staged: only the journal of later writes needs to travel.
        released += cache.byteLength;
        cache = null;
      } else journal = null;
      // Hand the released memory back to the OS now, so the checkpoint does not carry it.
      setFlagsFromString('--expose-gc');
      runInNewContext('gc')();
      writeSync(fd, `# prepare at token ${i} released=${released}\n`);
      return { token: i, releasedBytes: released };
    },
    resume({ stagedDirectory }) {
      const t = Date.now();
      if (!weights) weights = makeWeights(o.weightsMib, o.seed);
      let restaged = 0;
      if (!cache) {
        if (typeof stagedDirectory !== 'string') throw new Error('the cache was released on prepare, but resume names no stagedDirectory');
        const bytes = readFileSync(join(stagedDirectory, 'cache.bin'));
        cache = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
        for (let k = 0; k < journal.length; k += 2) cache[journal[k]] ^= journal[k + 1];
        restaged = bytes.byteLength;
      }
      journal = null;
      const ms = Date.now() - t;
      writeSync(fd, `# resume at token ${i} pid=${process.pid} rebuilt-ms=${ms} staged=${restaged}\n`);
      if (paused) {
        paused = false;
        timer ??= setTimeout(step, 0);
      }
      return { token: i, rebuiltMs: ms };
    },
  });
}

/** POST /stage, /prepare and /resume on 127.0.0.1:port; every answer closes its connection (CRIU dumps no open ones). */
function serveControl(port, actions) {
  const server = createServer((req, res) => {
    const name = { '/stage': 'stage', '/prepare': 'prepare', '/resume': 'resume' }[req.url];
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      res.setHeader('connection', 'close');
      if (req.method !== 'POST' || !name) {
        res.statusCode = 404;
        res.end('POST /stage, /prepare or /resume\n');
        return;
      }
      let reply;
      try {
        reply = actions[name](chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {});
      } catch (err) {
        res.statusCode = 500;
        res.end(`${err instanceof Error ? err.message : String(err)}\n`);
        return;
      }
      res.setHeader('content-type', 'application/json');
      res.end(`${JSON.stringify(reply)}\n`);
    });
  });
  server.listen(port, '127.0.0.1');
}
