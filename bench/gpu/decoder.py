#!/usr/bin/env python3
"""A production-like GPT-style decoder for spotwatch's GPU benchmark (bench/gpu/run.sh).

What it does, the way serving engines do it:
  * a Llama-style model (RMSNorm, rotary embeddings, grouped-query attention, SwiGLU) built from a config, with
    random bf16 weights created once (--create) and saved as safetensors shards on local disk;
  * weights loaded shard by shard with safetensors' safe_open and copied to the GPU;
  * the decode step's pieces torch.compile'd (QKV projection + rotary, attention + MLP, LM head; the KV-cache
    write stays outside the compiled pieces, like vLLM's piecewise graphs) and the whole step captured in one
    CUDA graph, replayed once per token;
  * a KV cache preallocated for context + new tokens; a long random context (seeded) prefilled in one pass;
  * greedy decoding: each token is written as "index token logit wallclock" to an output file kept open, so a
    token stream that survives a checkpoint/restore can be compared bit for bit with an uninterrupted one.

Modes:
  --create                 write random weights (seeded) for --config into --model-dir and exit
  --bandwidth              measure host<->device copy bandwidth (pinned and pageable) and exit
  (default)                load, compile, capture, prefill (twice: the second pass is the timed re-prefill),
                           decode --new-tokens; --reference only labels the run (the uninterrupted stream)
Timings go to --timings as JSON once decoding ends (a migrated process writes them after its restore).
"""
import argparse
import json
import math
import os
import sys
import time

T_START = time.time()
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")  # no compile worker processes: one process to checkpoint

CONFIGS = {
    # name: dim, layers, heads, kv_heads, ffn, vocab
    "tiny": dict(dim=512, layers=4, heads=8, kv_heads=4, ffn=1536, vocab=32000),
    "1b": dict(dim=2048, layers=16, heads=32, kv_heads=8, ffn=8192, vocab=128256),
    "3b": dict(dim=3072, layers=28, heads=24, kv_heads=8, ffn=8192, vocab=128256),
    "8b": dict(dim=4096, layers=32, heads=32, kv_heads=8, ffn=14336, vocab=128256),
}


def param_shapes(c):
    hd = c["dim"] // c["heads"]
    shapes = {"embed": (c["vocab"], c["dim"])}
    for i in range(c["layers"]):
        p = f"layers.{i}."
        shapes[p + "attn_norm"] = (c["dim"],)
        shapes[p + "wq"] = (c["heads"] * hd, c["dim"])
        shapes[p + "wk"] = (c["kv_heads"] * hd, c["dim"])
        shapes[p + "wv"] = (c["kv_heads"] * hd, c["dim"])
        shapes[p + "wo"] = (c["dim"], c["heads"] * hd)
        shapes[p + "mlp_norm"] = (c["dim"],)
        shapes[p + "w_gate"] = (c["ffn"], c["dim"])
        shapes[p + "w_up"] = (c["ffn"], c["dim"])
        shapes[p + "w_down"] = (c["dim"], c["ffn"])
    shapes["norm"] = (c["dim"],)
    shapes["lm_head"] = (c["vocab"], c["dim"])
    return shapes


def create(args):
    import torch
    from safetensors.torch import save_file

    c = CONFIGS[args.config]
    os.makedirs(args.model_dir, exist_ok=True)
    g = torch.Generator(device="cuda")
    g.manual_seed(args.seed)
    shard, shard_bytes, n, index = {}, 0, 0, {}
    limit = int(args.shard_gib * (1 << 30))
    total = 0
    t0 = time.time()

    def flush():
        nonlocal shard, shard_bytes, n
        if not shard:
            return
        name = f"model-{n:05d}.safetensors"
        save_file(shard, os.path.join(args.model_dir, name))
        for k in shard:
            index[k] = name
        shard, shard_bytes, n = {}, 0, n + 1

    for name, shape in param_shapes(c).items():
        if name.endswith("norm"):
            t = torch.ones(shape, dtype=torch.bfloat16)
        else:
            t = (torch.randn(shape, generator=g, device="cuda", dtype=torch.float32) * 0.02).to(torch.bfloat16).cpu()
        shard[name] = t
        shard_bytes += t.numel() * 2
        total += t.numel()
        if shard_bytes >= limit:
            flush()
    flush()
    with open(os.path.join(args.model_dir, "config.json"), "w") as f:
        json.dump(dict(c, name=args.config, params=total, seed=args.seed, weight_map=index), f)
    os.sync()
    print(json.dumps({"created": args.config, "params": total, "seconds": time.time() - t0}), flush=True)


def bandwidth(args):
    import torch

    n = int(args.bw_gib * (1 << 30))
    dev = torch.empty(n, dtype=torch.uint8, device="cuda")
    res = {}
    for kind, host in (("pinned", torch.empty(n, dtype=torch.uint8, pin_memory=True)), ("pageable", torch.empty(n, dtype=torch.uint8))):
        host.fill_(1)
        for direction in ("h2d", "d2h"):
            best = math.inf
            for _ in range(3):
                torch.cuda.synchronize()
                t = time.perf_counter()
                if direction == "h2d":
                    dev.copy_(host, non_blocking=(kind == "pinned"))
                else:
                    host.copy_(dev, non_blocking=(kind == "pinned"))
                torch.cuda.synchronize()
                best = min(best, time.perf_counter() - t)
            res[f"{kind}_{direction}_GBps"] = n / best / 1e9
        del host
    res["bytes"] = n
    print(json.dumps(res), flush=True)
    if args.timings:
        with open(args.timings, "w") as f:
            json.dump(res, f)


class VmmRange:
    """One device range from the CUDA driver's virtual memory API (cuMemAddressReserve/Create/Map). release() unmaps
    and frees the physical memory but keeps the addresses reserved; remap() maps new memory at the same addresses —
    so torch.compile'd code and the captured CUDA graph, which hold the pointers, stay valid. What SGLang's
    torch_memory_saver does; here it lets spotwatch's task control leave memory out of a checkpoint."""

    def __init__(self, nbytes, dev):
        import torch
        from cuda.bindings import driver as cu

        self.cu = cu
        self.dev_index = dev.index if dev.index is not None else torch.cuda.current_device()
        self.prop = cu.CUmemAllocationProp()
        self.prop.type = cu.CUmemAllocationType.CU_MEM_ALLOCATION_TYPE_PINNED
        self.prop.location.type = cu.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
        self.prop.location.id = self.dev_index
        gran = self._ck(cu.cuMemGetAllocationGranularity(self.prop, cu.CUmemAllocationGranularity_flags.CU_MEM_ALLOC_GRANULARITY_RECOMMENDED))
        self.size = (nbytes + gran - 1) // gran * gran
        self.ptr = int(self._ck(cu.cuMemAddressReserve(self.size, gran, 0, 0)))
        self._map()
        ptr, size = self.ptr, self.size

        class _Mem:
            __cuda_array_interface__ = {"shape": (size,), "typestr": "|u1", "data": (ptr, False), "version": 3}

        self.flat = torch.as_tensor(_Mem(), device=dev)

    def _ck(self, r):
        err = r[0] if isinstance(r, tuple) else r
        if err != self.cu.CUresult.CUDA_SUCCESS:
            raise RuntimeError(f"CUDA driver call failed: {err}")
        return r[1] if isinstance(r, tuple) and len(r) > 1 else None

    def _map(self):
        cu = self.cu
        self.handle = self._ck(cu.cuMemCreate(self.size, self.prop, 0))
        r = cu.cuMemMap(self.ptr, self.size, 0, self.handle, 0)
        if r[0] != cu.CUresult.CUDA_SUCCESS:
            # the reservation did not survive (e.g. a restore): reserve the same addresses again, then map
            got = int(self._ck(cu.cuMemAddressReserve(self.size, 0, self.ptr, 0)))
            if got != self.ptr:
                raise RuntimeError(f"could not reserve the weights' addresses again (got {got:#x}, wanted {self.ptr:#x})")
            self._ck(cu.cuMemMap(self.ptr, self.size, 0, self.handle, 0))
        desc = cu.CUmemAccessDesc()
        desc.location.type = cu.CUmemLocationType.CU_MEM_LOCATION_TYPE_DEVICE
        desc.location.id = self.dev_index
        desc.flags = cu.CUmemAccess_flags.CU_MEM_ACCESS_FLAGS_PROT_READWRITE
        self._ck(cu.cuMemSetAccess(self.ptr, self.size, [desc], 1))

    def release(self):
        if self.handle is None:
            return 0
        self._ck(self.cu.cuMemUnmap(self.ptr, self.size))
        self._ck(self.cu.cuMemRelease(self.handle))
        self.handle = None
        return self.size

    def remap(self):
        """Maps memory again if it was released; True when it did (the contents are undefined until written)."""
        if self.handle is not None:
            return False
        self._map()
        return True


class RangeLoader:
    """Copies byte ranges of files into device memory the way fast model loaders do: several threads, each with its
    own CUDA stream and two pinned host buffers; os.preadv into one buffer while the other's copy to the device runs.
    The pinned buffers are freed when the load ends (they would otherwise ride along in the next checkpoint)."""

    def __init__(self, threads=8, chunk=32 << 20):
        self.threads, self.chunk = threads, chunk

    def run(self, jobs):
        """jobs: (path, file offset, nbytes, destination: a contiguous uint8 device tensor of nbytes). Bytes copied."""
        import threading

        import torch

        lanes = [[] for _ in range(max(1, min(self.threads, len(jobs))))]
        sizes = [0] * len(lanes)
        for job in sorted(jobs, key=lambda j: -j[2]):  # largest first, onto the least loaded lane
            k = sizes.index(min(sizes))
            lanes[k].append(job)
            sizes[k] += job[2]
        errors = []

        def lane(mine):
            try:
                stream = torch.cuda.Stream()
                bufs = [torch.empty(self.chunk, dtype=torch.uint8, pin_memory=True) for _ in range(2)]
                views = [memoryview(b.numpy()) for b in bufs]
                events, fds, k = [None, None], {}, 0
                for path, off, n, dest in mine:
                    fd = fds.get(path)
                    if fd is None:
                        fd = fds[path] = os.open(path, os.O_RDONLY)
                    done = 0
                    while done < n:
                        m, b = min(self.chunk, n - done), k % 2
                        if events[b] is not None:
                            events[b].synchronize()
                        got = 0
                        while got < m:
                            r = os.preadv(fd, [views[b][got:m]], off + done + got)
                            if r <= 0:
                                raise IOError(f"{path}: short read at {off + done + got}")
                            got += r
                        with torch.cuda.stream(stream):
                            dest[done:done + m].copy_(bufs[b][:m], non_blocking=True)
                            events[b] = torch.cuda.Event()
                            events[b].record(stream)
                        done += m
                        k += 1
                stream.synchronize()
                for fd in fds.values():
                    os.close(fd)
            except Exception as e:  # noqa: BLE001 - re-raised below, in the caller's thread
                errors.append(e)

        threads = [threading.Thread(target=lane, args=(mine,)) for mine in lanes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        if hasattr(torch._C, "_host_emptyCache"):
            torch._C._host_emptyCache()  # give the pinned buffers back now
        return sum(sizes)


def safetensors_offsets(path):
    """{name: (absolute file offset, nbytes)} from a safetensors header (8-byte little-endian length + JSON)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(n))
    return {k: (8 + n + v["data_offsets"][0], v["data_offsets"][1] - v["data_offsets"][0]) for k, v in header.items() if k != "__metadata__"}


class VmmWeights:
    """All weights in one VmmRange, each parameter a view of it: released before a checkpoint, mapped again at the
    same addresses and read again from local disk (RangeLoader: the tensors' bytes straight from the safetensors
    files into the range) after the restore."""

    ALIGN = 512

    def __init__(self, model_dir, c, dev):
        import torch
        from safetensors import safe_open

        self.layout, off = [], 0
        dtypes = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}
        for shard in sorted(set(c["weight_map"].values())):
            with safe_open(os.path.join(model_dir, shard), framework="pt", device="cpu") as f:
                for name in f.keys():
                    sl = f.get_slice(name)
                    shape, dt = tuple(sl.get_shape()), dtypes[sl.get_dtype()]
                    n = math.prod(shape) * torch.tensor([], dtype=dt).element_size()
                    self.layout.append((shard, name, off, n, shape, dt))
                    off = (off + n + self.ALIGN - 1) // self.ALIGN * self.ALIGN
        self.range = VmmRange(off, dev)
        flat = self.range.flat
        self.views = {name: flat[o:o + n].view(dt).view(shape) for (_s, name, o, n, shape, dt) in self.layout}
        offsets = {shard: safetensors_offsets(os.path.join(model_dir, shard)) for shard in {s for (s, *_r) in self.layout}}
        self.jobs = []
        for shard, name, o, n, _shape, _dt in self.layout:
            file_off, file_n = offsets[shard][name]
            if file_n != n:
                raise RuntimeError(f"{shard}: {name} holds {file_n} bytes, expected {n}")
            self.jobs.append((os.path.join(model_dir, shard), file_off, n, flat[o:o + n]))

    def load(self, extra_jobs=()):
        """Reads every weight (and any extra ranges, e.g. a staged KV cache: one pool for all); bytes read."""
        return RangeLoader().run(self.jobs + list(extra_jobs))

    def release(self):
        return self.range.release()

    def remap_and_load(self, extra_jobs=()):
        self.range.remap()
        return self.load(extra_jobs)


class KvStage:
    """The KV cache in a VmmRange, and spotwatch's staging of it (spotwatch run --stage-url): stage() writes the
    filled prefix (positions < N, final once written: decoding only appends) to DIR/kv.bin while decoding goes on;
    prepare keeps the few positions written since in host memory and releases the device memory; resume maps it
    again, zeroes it, reads the prefix back from the staged directory on this node and puts the tail back."""

    def __init__(self, L, KVH, max_len, D, dev):
        import torch

        self.torch, self.L, self.KVH, self.max_len, self.D = torch, L, KVH, max_len, D
        per = KVH * max_len * D * 2
        self.range = VmmRange(2 * L * per, dev)
        self.range.flat.zero_()
        flat = self.range.flat
        self.k = [flat[(2 * i) * per:(2 * i + 1) * per].view(torch.bfloat16).view(KVH, max_len, D) for i in range(L)]
        self.v = [flat[(2 * i + 1) * per:(2 * i + 2) * per].view(torch.bfloat16).view(KVH, max_len, D) for i in range(L)]
        self.staged_tokens = None  # positions in the staged prefix
        self.tail = None  # (start, [host tensors]) kept across a checkpoint

    def _caches(self):
        for i in range(self.L):
            yield self.k[i]
            yield self.v[i]

    def stage(self, directory, n_tokens):
        torch = self.torch
        stream = torch.cuda.Stream()
        nbytes = 0
        with torch.cuda.stream(stream), open(os.path.join(directory, "kv.bin"), "wb") as f:
            for cache in self._caches():
                host = cache[:, :n_tokens].contiguous().cpu()  # on the side stream; positions < n_tokens are final
                f.write(host.view(torch.int16).numpy())
                nbytes += host.numel() * 2
        meta = {"tokens": n_tokens, "layers": self.L, "kv_heads": self.KVH, "head_dim": self.D, "dtype": "bf16", "order": "layer, k then v, [kv_heads, tokens, head_dim]"}
        with open(os.path.join(directory, "kv.json"), "w") as f:
            json.dump(meta, f)
        self.staged_tokens = n_tokens
        return nbytes

    def release_staged(self, upto):
        """Keeps positions [staged, upto) in host memory and releases the device memory; bytes released."""
        torch = self.torch
        n = self.staged_tokens
        self.tail = (n, [cache[:, n:upto].contiguous().cpu() for cache in self._caches()])
        torch.cuda.synchronize()
        return self.range.release()

    def restore_jobs(self, directory):
        """Maps the range again (zeroed: positions not written yet must read as zeros — masked, times 0) and returns
        the RangeLoader jobs that fill it from the staged files: one per layer, K/V and head."""
        torch = self.torch
        if not self.range.remap():
            return []
        self.range.flat.zero_()
        torch.cuda.synchronize()
        with open(os.path.join(directory, "kv.json")) as f:
            meta = json.load(f)
        n = meta["tokens"]
        if n != self.tail[0] or meta["layers"] != self.L or meta["kv_heads"] != self.KVH or meta["head_dim"] != self.D:
            raise RuntimeError(f"staged KV cache does not match: {meta} vs {self.tail[0]} tokens")
        path, run = os.path.join(directory, "kv.bin"), n * self.D * 2
        per_cache, per_head = self.KVH * self.max_len * self.D * 2, self.max_len * self.D * 2
        flat = self.range.flat
        return [(path, (c * self.KVH + h) * run, run, flat[c * per_cache + h * per_head:c * per_cache + h * per_head + run])
                for c in range(2 * self.L) for h in range(self.KVH)]

    def restore_tail(self):
        """After the staged prefix is back: the positions written since, from host memory."""
        n = self.tail[0]
        for cache, tail in zip(self._caches(), self.tail[1]):
            if tail.shape[1]:
                cache[:, n:n + tail.shape[1]].copy_(tail)
        self.torch.cuda.synchronize()
        self.tail, self.staged_tokens = None, None

    def drop_stage(self):
        """The checkpoint will carry the cache itself (no staged copy on the target)."""
        self.staged_tokens = None


class Control:
    """spotwatch's task control (spotwatch run --prepare-url/--resume-url): POST /prepare and /resume on
    127.0.0.1:PORT. The HTTP thread hands each request to the decode loop, which acts between two tokens and answers;
    every connection closes after its answer (HTTP/1.0), so none is open when CRIU dumps the process."""

    def __init__(self, port, stage=None):
        import threading
        from http.server import BaseHTTPRequestHandler, HTTPServer

        self.lock = threading.Lock()
        self.pending, self.reply, self.body = None, None, {}
        self.requested, self.answered = threading.Event(), threading.Event()
        ctl = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_POST(self):
                what = {"/prepare": "prepare", "/resume": "resume", "/stage": "stage"}.get(self.path)
                raw = self.rfile.read(int(self.headers.get("content-length") or 0))
                if what is None or (what == "stage" and stage is None):
                    self.send_response(404)
                    self.end_headers()
                    return
                body = json.loads(raw or b"{}")
                if what == "stage":
                    # Staging runs here, beside the decode loop, which goes on (it only appends to the KV cache).
                    try:
                        reply, status = stage(body["directory"]), 200
                    except Exception as e:  # noqa: BLE001 - the agent gets the reason and moves everything instead
                        reply, status = {"error": str(e)}, 500
                    out = json.dumps(reply).encode()
                    self.send_response(status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(out)))
                    self.end_headers()
                    self.wfile.write(out)
                    return
                with ctl.lock:
                    ctl.answered.clear()
                    ctl.pending, ctl.body = what, body
                    ctl.requested.set()
                    ok = ctl.answered.wait(300)
                    body = json.dumps(ctl.reply if ok else {"error": "no answer"}).encode()
                self.send_response(200 if ok else 504)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.server = HTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wanted(self, what):
        return self.requested.is_set() and self.pending == what

    def wait_for(self, what):
        while True:
            if self.requested.wait(1):
                if self.pending == what:
                    return self.body
                self.answer({"state": "paused", "ignored": self.pending})  # e.g. a second prepare: already done

    def answer(self, reply):
        self.requested.clear()
        self.pending = None
        self.reply = reply
        self.answered.set()


def run(args):
    tm = {"t_start": T_START, "config": args.config, "ctx": args.ctx, "new_tokens": args.new_tokens, "reference": args.reference}
    t = time.time()
    import torch
    import torch.nn.functional as F
    from safetensors import safe_open

    tm["import_s"] = time.time() - t
    torch.manual_seed(args.seed)
    torch.set_grad_enabled(False)
    dev = torch.device("cuda")
    torch.cuda.init()
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False

    # ---- weights: safetensors shards -> GPU, like a serving engine's loader
    t = time.time()
    with open(os.path.join(args.model_dir, "config.json")) as f:
        c = json.load(f)
    W, nbytes = {}, 0
    vmm = VmmWeights(args.model_dir, c, dev) if args.vmm_weights else None
    if vmm is not None:
        W = vmm.views
        nbytes = vmm.load()
    else:
        for shard in sorted(set(c["weight_map"].values())):
            with safe_open(os.path.join(args.model_dir, shard), framework="pt", device="cpu") as f:
                for name in f.keys():
                    x = f.get_tensor(name)
                    W[name] = x.to(dev)
                    nbytes += x.numel() * x.element_size()
    torch.cuda.synchronize()
    tm["load_s"] = time.time() - t
    tm["weights_bytes"] = nbytes
    tm["params"] = c["params"]

    dim, L, H, KVH = c["dim"], c["layers"], c["heads"], c["kv_heads"]
    D = dim // H
    G = H // KVH
    max_len = args.ctx + args.new_tokens + 8
    scale = 1.0 / math.sqrt(D)
    bf = torch.bfloat16

    # ---- KV cache, preallocated: one [KVH, max_len, D] tensor per layer for K and for V
    kv = KvStage(L, KVH, max_len, D, dev) if args.vmm_kv else None
    if kv is not None:
        kc, vc = kv.k, kv.v
    else:
        kc = [torch.zeros(KVH, max_len, D, dtype=bf, device=dev) for _ in range(L)]
        vc = [torch.zeros(KVH, max_len, D, dtype=bf, device=dev) for _ in range(L)]
    tm["kv_cache_bytes"] = 2 * L * KVH * max_len * D * 2

    inv = 1.0 / (10000.0 ** (torch.arange(0, D, 2, device=dev, dtype=torch.float32) / D))
    ang = torch.outer(torch.arange(max_len, device=dev, dtype=torch.float32), inv)
    cos_t, sin_t = ang.cos(), ang.sin()  # [max_len, D/2]
    ar = torch.arange(max_len, device=dev)

    def rms(x, w):
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(bf) * w

    def rope(x, cos, sin):  # x [T, h, D]; cos/sin [T, D/2]
        xf = x.float()
        x1, x2 = xf[..., : D // 2], xf[..., D // 2 :]
        cos, sin = cos[:, None, :], sin[:, None, :]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).to(bf)

    # ---- decode pieces (one token), compiled once and reused by every layer
    def qkv(x, cos_p, sin_p, attn_norm, wq, wk, wv):
        h = rms(x, attn_norm)
        q = rope((h @ wq.t()).view(1, H, D), cos_p, sin_p)
        k = rope((h @ wk.t()).view(1, KVH, D), cos_p, sin_p)
        v = (h @ wv.t()).view(1, KVH, D)
        return q, k.view(KVH, 1, D), v.view(KVH, 1, D)

    def attn_mlp(x, q, k_cache, v_cache, mask, wo, mlp_norm, wg, wu, wd):
        qg = q.view(KVH, G, D)
        s = (qg @ k_cache.transpose(1, 2)).float() * scale  # [KVH, G, max_len]
        s = s.masked_fill(~mask, float("-inf"))
        p = torch.softmax(s, -1).to(bf)
        o = (p @ v_cache).reshape(1, H * D)  # [KVH, G, D] -> [1, H*D]
        x = x + o @ wo.t()
        h = rms(x, mlp_norm)
        return x + (F.silu(h @ wg.t()) * (h @ wu.t())) @ wd.t()

    def head(x, norm_w, lm_head):
        logits = (rms(x, norm_w) @ lm_head.t()).float()
        return logits.max(-1)

    if not args.no_compile:
        qkv_c, attn_mlp_c, head_c = torch.compile(qkv, dynamic=False), torch.compile(attn_mlp, dynamic=False), torch.compile(head, dynamic=False)
    else:
        qkv_c, attn_mlp_c, head_c = qkv, attn_mlp, head

    tok_buf = torch.zeros(1, dtype=torch.long, device=dev)
    pos_buf = torch.zeros(1, dtype=torch.long, device=dev)
    out_tok = torch.zeros(1, dtype=torch.long, device=dev)
    out_val = torch.zeros(1, dtype=torch.float32, device=dev)
    lw = [[W[f"layers.{i}.{n}"] for n in ("attn_norm", "wq", "wk", "wv", "wo", "mlp_norm", "w_gate", "w_up", "w_down")] for i in range(L)]

    def step():
        x = W["embed"].index_select(0, tok_buf)
        cos_p, sin_p = cos_t.index_select(0, pos_buf), sin_t.index_select(0, pos_buf)
        mask = ar <= pos_buf
        for i in range(L):
            an, wq, wk, wv, wo, mn, wg, wu, wd = lw[i]
            q, k, v = qkv_c(x, cos_p, sin_p, an, wq, wk, wv)
            kc[i].index_copy_(1, pos_buf, k)
            vc[i].index_copy_(1, pos_buf, v)
            x = attn_mlp_c(x, q, kc[i], vc[i], mask, wo, mn, wg, wu, wd)
        val, idx = head_c(x, W["norm"], W["lm_head"])
        out_tok.copy_(idx)
        out_val.copy_(val)
        tok_buf.copy_(idx)
        pos_buf.add_(1)

    # ---- compile (warm-up runs) and capture the step in a CUDA graph, before the prefill fills the cache
    t = time.time()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    tm["compile_s"] = time.time() - t
    t = time.time()
    graph = None
    if not args.no_graph:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        torch.cuda.synchronize()
        for _ in range(2):  # warm-up replays
            graph.replay()
        torch.cuda.synchronize()
    tm["capture_s"] = time.time() - t

    # ---- prefill of the whole context in one pass (causal flash attention), filling the cache
    gen = torch.Generator().manual_seed(args.seed + 1)
    ctx_tokens = torch.randint(0, c["vocab"], (args.ctx,), generator=gen).to(dev)

    def prefill():
        T = args.ctx
        x = W["embed"].index_select(0, ctx_tokens)  # [T, dim]
        cos, sin = cos_t[:T], sin_t[:T]
        for i in range(L):
            an, wq, wk, wv, wo, mn, wg, wu, wd = lw[i]
            h = rms(x, an)
            q = rope((h @ wq.t()).view(T, H, D), cos, sin)
            k = rope((h @ wk.t()).view(T, KVH, D), cos, sin)
            v = (h @ wv.t()).view(T, KVH, D)
            kc[i][:, :T].copy_(k.transpose(0, 1))
            vc[i][:, :T].copy_(v.transpose(0, 1))
            qh = q.transpose(0, 1).unsqueeze(0)  # [1, H, T, D]
            kh = k.transpose(0, 1).repeat_interleave(G, 0).unsqueeze(0)
            vh = v.transpose(0, 1).repeat_interleave(G, 0).unsqueeze(0)
            o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=True)
            x = x + o.squeeze(0).transpose(0, 1).reshape(T, H * D) @ wo.t()
            h = rms(x, mn)
            x = x + (F.silu(h @ wg.t()) * (h @ wu.t())) @ wd.t()
        val, idx = head(x[-1:], W["norm"], W["lm_head"])
        torch.cuda.synchronize()
        return idx, val

    for n in (1, 2):
        t = time.time()
        idx, val = prefill()
        tm[f"prefill{n}_s"] = time.time() - t
    if args.empty_cache:
        # Hand the allocator's cached free blocks (the prefill's activations) back to the driver, so that a
        # checkpoint moves only live memory: weights, KV cache, graph pool.
        tm["gpu_reserved_before_empty_cache_bytes"] = torch.cuda.memory_reserved()
        torch.cuda.empty_cache()
    tm["gpu_reserved_bytes"] = torch.cuda.memory_reserved()
    tm["gpu_allocated_bytes"] = torch.cuda.memory_allocated()

    tok_buf.copy_(idx)
    pos_buf.fill_(args.ctx)
    torch.cuda.synchronize()

    out = open(args.out, "w", buffering=1)
    out.write(f"0 {idx.item()} {val.item()!r} {time.time():.6f}\n")
    tm["first_token_ts"] = time.time()
    print(json.dumps({"ready": os.getpid(), "first_token_ts": tm["first_token_ts"]}), flush=True)
    interval = args.token_interval_ms / 1000.0
    kv_final = [args.ctx]  # KV positions below this are written and final (the decode loop moves it after each token)

    def stage(directory):
        ts = time.time()
        n = kv_final[0]
        nbytes = kv.stage(directory, n)
        tm.setdefault("stages", []).append({"tokens": n, "bytes": nbytes, "seconds": time.time() - ts})
        return {"tokens": n, "stagedBytes": nbytes}

    ctl = Control(args.control_port, stage if kv is not None else None) if args.control_port else None
    t = time.time()
    for i in range(1, args.new_tokens):
        if ctl is not None and ctl.wanted("prepare"):
            # Between two tokens: give the weights' device memory back (the address range stays reserved, so the
            # captured graph's pointers stay valid), the staged KV cache when the target holds it, and the
            # allocator's cache, then wait for resume.
            body = ctl.body
            torch.cuda.synchronize()
            released = vmm.release() if vmm is not None else 0
            if kv is not None and kv.staged_tokens is not None and body.get("stagedDirectory"):
                released += kv.release_staged(kv_final[0])
            elif kv is not None:
                kv.drop_stage()
            if args.release_graph and graph is not None:
                # the graph's private memory pool goes too; the step is captured again (tens of ms) after resume
                graph.reset()
                graph = None
            torch.cuda.empty_cache()
            # Host memory the allocator holds but nothing uses (freed during load, compile, staging) would be dumped
            # like the rest: hand it back to the kernel first.
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)
            free, total = torch.cuda.mem_get_info()
            # what the CUDA checkpoint is left to move: the device's used memory (this is its only process)
            tm.setdefault("prepares", []).append({"token": i, "releasedBytes": released, "deviceUsedBytes": total - free})
            ctl.answer({"token": i, "releasedBytes": released})
            body = ctl.wait_for("resume")
            tr = time.time()
            # the weights and the staged KV cache's prefix load together (files on this node, one loader)
            kv_jobs = kv.restore_jobs(body.get("stagedDirectory") or "") if kv is not None and kv.tail is not None else []
            kv_bytes = sum(j[2] for j in kv_jobs)
            if vmm is not None:
                reloaded = vmm.remap_and_load(kv_jobs) - kv_bytes
            else:
                reloaded = 0
                if kv_jobs:
                    RangeLoader().run(kv_jobs)
            if kv_jobs:
                kv.restore_tail()
            if args.release_graph and graph is None and not args.no_graph:
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    step()
            torch.cuda.synchronize()
            took = time.time() - tr
            tm.setdefault("resumes", []).append({"token": i, "reloadedBytes": reloaded + kv_bytes, "weightsBytes": reloaded, "kvStagedBytes": kv_bytes, "seconds": took})
            ctl.answer({"token": i, "reloadedBytes": reloaded + kv_bytes, "seconds": took})
        if graph is not None:
            graph.replay()
        else:
            step()
        out.write(f"{i} {out_tok.item()} {out_val.item()!r} {time.time():.6f}\n")
        kv_final[0] = args.ctx + i  # .item() waited for the step: the KV of position ctx + i - 1 is written
        if interval:
            time.sleep(interval)
    tm["decode_s"] = time.time() - t
    tm["done_ts"] = time.time()
    out.close()
    tm["pid"] = os.getpid()
    if args.timings:
        with open(args.timings + ".tmp", "w") as f:
            json.dump(tm, f)
        os.rename(args.timings + ".tmp", args.timings)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="1b", choices=sorted(CONFIGS))
    ap.add_argument("--model-dir")
    ap.add_argument("--create", action="store_true")
    ap.add_argument("--bandwidth", action="store_true")
    ap.add_argument("--bw-gib", type=float, default=4.0)
    ap.add_argument("--shard-gib", type=float, default=2.0)
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--token-interval-ms", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--out")
    ap.add_argument("--timings")
    ap.add_argument("--reference", action="store_true", help="the uninterrupted run whose token stream is the reference")
    ap.add_argument("--empty-cache", action="store_true", help="release the allocator's cached blocks after the prefill")
    ap.add_argument("--vmm-weights", action="store_true", help="weights in one range of the driver's VMM API (releasable, same addresses)")
    ap.add_argument("--control-port", type=int, default=0, help="serve spotwatch's task control (POST /prepare, /resume) on 127.0.0.1:PORT")
    ap.add_argument("--release-graph", action="store_true", help="on prepare, free the captured CUDA graph (and its memory pool); capture it again on resume")
    ap.add_argument("--vmm-kv", action="store_true", help="KV cache in a VMM range; with --control-port also POST /stage (spotwatch run --stage-url)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--no-graph", action="store_true")
    args = ap.parse_args()
    if args.bandwidth:
        return bandwidth(args)
    if not args.model_dir:
        ap.error("--model-dir is required")
    if args.create:
        return create(args)
    if not args.out:
        ap.error("--out is required")
    run(args)


if __name__ == "__main__":
    sys.exit(main())
