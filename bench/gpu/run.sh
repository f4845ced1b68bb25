#!/usr/bin/env bash
# spotwatch GPU benchmark: moves a live PyTorch decoder (bench/gpu/decoder.py) off its GPU and back through the
# CUDA checkpoint API + CRIU, proves its token stream is the uninterrupted one, and measures every stage against
# a fresh replica's cold start, a re-prefill, and the host<->device copy floor.
#
# Runs unattended on a bare GPU machine with PyTorch but no Node.js and no network: it brings what it needs from
# .spotwatch/gpu-bundle/ (made by bench/gpu/prepare.sh on a machine with Node.js: node, CRIU, redis-server, the
# helper, the bundled driver). Run as root (CRIU, drop_caches).
#
#   bench/gpu/run.sh                          # default configurations
#   CONFIGS="tiny:1024:64" bench/gpu/run.sh   # config:context:new-tokens, space separated (tiny, 1b, 3b, 8b)
#
# Environment:
#   CONFIGS                     default "1b:16384:256 8b:32768:256"
#   MIGRATE_AT                  tokens decoded before the interruption (default 48)
#   VIA                         how the direct path moves the task, space separated (default "engine"):
#                               engine = src/engines/criu CriuEngine + CudaCheckpointHook, image streamed through the
#                               page server into the target's receive(); commands = hook + criu command lines, dump
#                               to tmpfs, copy over loopback TCP, restore; pageserver = hook + criu dump sending
#                               its pages straight to `criu page-server` over TCP; any of them +emptycache: the
#                               decoder frees the allocator's cached blocks after the prefill
#   TOKEN_INTERVAL_MS           pause between tokens (default 10: the migration lands mid-stream)
#   SPOTWATCH_GPU_BENCH_PATH    direct (default): the CUDA hook + CRIU driven stage by stage by bench/gpu/migrate.ts;
#                               agents: Redis, two `spotwatch agent` processes (node-a, node-b), `spotwatch run --
#                               decoder` on node-a, `spotwatch simulate aws interrupt` at node-a's emulator; spotwatch
#                               moves it to node-b (bench/gpu/agents.ts). Runs the first of CONFIGS (default
#                               "1b:16384:256") and merges "agentPath" into gpu-<date>.json, other keys untouched
#   SPOTWATCH_GPU_INITIAL_RATES agent path only: the agents' --initial-rates (default: the rates the direct path
#                               measured on an H100, "stream=1.3GB,restore=1.4GB,gpu=1.5GB")
#   SPOTWATCH_GPU_DECODER_EMPTY_CACHE  agent path only: 1 = the decoder frees the allocator's cached blocks after
#                               its prefill (as +emptycache on the direct path)
#   SPOTWATCH_GPU_DECODER_CONTROL  agent path only: 1 = the decoder keeps its weights in VMM memory and serves task
#                               control; spotwatch tells it to release them before the checkpoint and reload after
#   SPOTWATCH_GPU_DECODER_STAGE    with CONTROL=1: the KV cache in VMM memory too, and `spotwatch run --stage-url`:
#                               the decoder stages the KV cache's filled prefix while it decodes, spotwatch sends it
#                               to node-b ahead of the freeze, only the tail written since moves in the checkpoint
#   SPOTWATCH_TRANSPARENT_HUGEPAGES  passed to the agents (always: they set the node's THP at start, docs/gpu.md)
#   SPOTWATCH_GPU_BENCH_TASK    agent path only: decoder (default) or toy (examples/toy-llm/toy-llm.mjs, a CPU
#                               rehearsal of the same code path: CONFIGS="toy:64:300", no GPU, no PyTorch)
#   SPOTWATCH_GPU_WORK          work dir on local disk (default /var/tmp/spotwatch-gpu: weights, compile cache)
#   SPOTWATCH_GPU_IMAGES        image dir on tmpfs (default /dev/shm/spotwatch-gpu)
#   RESULTS_DIR                 where gpu-<date>.json goes (default bench/results); OUT: also copied there
#   CHECK_ONLY=1                only the machine facts, tools and helper probe
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
B="$ROOT/.spotwatch/gpu-bundle"
W="${SPOTWATCH_GPU_WORK:-/var/tmp/spotwatch-gpu}"
IMG="${SPOTWATCH_GPU_IMAGES:-/dev/shm/spotwatch-gpu}"
R="$W/results"
RESULTS_DIR="${RESULTS_DIR:-$ROOT/bench/results}"
BENCH_PATH="${SPOTWATCH_GPU_BENCH_PATH:-direct}"
BENCH_TASK="${SPOTWATCH_GPU_BENCH_TASK:-decoder}"
if [ "$BENCH_PATH" = agents ]; then CONFIGS="${CONFIGS:-1b:16384:256}"; else CONFIGS="${CONFIGS:-1b:16384:256 8b:32768:256}"; fi
MIGRATE_AT="${MIGRATE_AT:-48}"
TOKEN_INTERVAL_MS="${TOKEN_INTERVAL_MS:-10}"
VIA="${VIA:-engine}"
PY="${PYTHON:-python3}"
DEC="$ROOT/bench/gpu/decoder.py"
export TORCHINDUCTOR_COMPILE_THREADS=1 TORCHINDUCTOR_CACHE_DIR="$W/inductor-cache" TRITON_CACHE_DIR="$W/triton-cache"
export PYTHONUNBUFFERED=1

log() { printf '[gpu-bench +%ss] %s\n' "$SECONDS" "$*"; }
die() { log "FATAL: $*"; exit 1; }
mkdir -p "$W/bin" "$R" "$IMG" || die "cannot create $W or $IMG"
rm -rf "${R:?}"/*

# ---- tools: node, CRIU, redis-server, the CUDA helper
NODE=""
if command -v node >/dev/null 2>&1 && node -e 'process.exit(+process.versions.node.split(".")[0] >= 20 ? 0 : 1)' 2>/dev/null; then
  NODE=$(command -v node)
else
  [ -s "$B/node.xz" ] || die "no node >= 20 here and no $B/node.xz: run bench/gpu/prepare.sh where Node.js is, and carry .spotwatch/gpu-bundle"
  [ -x "$W/bin/node" ] || { xz -dc "$B/node.xz" >"$W/bin/node.tmp" && chmod 755 "$W/bin/node.tmp" && mv "$W/bin/node.tmp" "$W/bin/node"; } || die "cannot unpack node"
  NODE="$W/bin/node"
fi
if [ -x "$ROOT/.criu/bin/criu" ] && "$ROOT/.criu/bin/criu" --version >/dev/null 2>&1; then
  CRIU="$ROOT/.criu/bin/criu"
else
  [ -x "$W/.criu/bin/criu" ] || tar -xJf "$B/criu.tar.xz" -C "$W" || die "cannot unpack CRIU"
  CRIU="$W/.criu/bin/criu"
fi
if command -v redis-server >/dev/null 2>&1; then
  REDIS=$(command -v redis-server)
else
  [ -x "$W/redis/redis-server" ] || tar -xJf "$B/redis.tar.xz" -C "$W" || die "cannot unpack redis"
  REDIS="$W/redis/redis-server"
fi
HELPER=$(SPOTWATCH_CUDA_HELPER_OUT="$W/bin" SPOTWATCH_CUDA_HELPER_REBUILD=1 bash "$ROOT/scripts/build-cuda-helper.sh" 2>/dev/null | tail -n1)
if [ -z "$HELPER" ] || [ ! -x "$HELPER" ]; then
  HELPER="$W/bin/cuda-checkpoint-helper.prebuilt"
  cp -f "$B/cuda-checkpoint-helper" "$HELPER" || die "no CUDA helper"
fi
# The page pump (native/page-pump.c): the agents' source side hands it the dump's pages (SPOTWATCH_PAGE_PUMP=node
# measures the agent's own pump instead).
PUMP=$(SPOTWATCH_NATIVE_OUT="$W/bin" SPOTWATCH_NATIVE_REBUILD=1 bash "$ROOT/scripts/build-native.sh" page-pump 2>/dev/null | tail -n1)
if [ -z "$PUMP" ] || [ ! -x "$PUMP" ]; then
  PUMP="$W/bin/page-pump.prebuilt"
  cp -f "$B/page-pump" "$PUMP" || die "no page pump"
fi
# The exec holder (native/exec-holder.c): the target's CRIUs start ahead of the restore (off where it did not build).
HOLDER=$(SPOTWATCH_NATIVE_OUT="$W/bin" SPOTWATCH_NATIVE_REBUILD=1 bash "$ROOT/scripts/build-native.sh" exec-holder 2>/dev/null | tail -n1)
if [ -z "$HOLDER" ] || [ ! -x "$HOLDER" ]; then
  HOLDER="$W/bin/exec-holder.prebuilt"
  cp -f "$B/exec-holder" "$HOLDER" 2>/dev/null || HOLDER=""
fi
export SPOTWATCH_CUDA_HELPER="$HELPER" SPOTWATCH_CRIU="$CRIU" SPOTWATCH_REDIS_SERVER="$REDIS" SPOTWATCH_PAGE_PUMP_BIN="$PUMP"
if [ -n "$HOLDER" ]; then export SPOTWATCH_EXEC_HOLDER_BIN="$HOLDER"; else export SPOTWATCH_EXEC_HOLDER=off; fi

log "node $("$NODE" --version) ($NODE); $("$CRIU" --version | head -n1) ($CRIU); $("$REDIS" --version | cut -d' ' -f1-3); helper $HELPER; page pump $PUMP (${SPOTWATCH_PAGE_PUMP:-native}); exec holder ${HOLDER:-off}"
log "helper probe: $("$HELPER" probe)"
log "helper state of pid 1 (not a CUDA process): $("$HELPER" state 1)"
criu_check=$("$CRIU" check 2>&1 | tail -n 3)
log "criu check: $criu_check"

# ---- machine facts
"$PY" - "$R/info.json" "$("$CRIU" --version | head -n1)" <<'EOF'
import json, os, subprocess, sys, platform
info = {"kernel": platform.release(), "criu": sys.argv[2]}
try:
    q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"], capture_output=True, text=True).stdout.strip().splitlines()
    info["device"], info["driver"], info["gpuMemory"] = [s.strip() for s in q[0].split(",")]
    info["gpus"] = len(q)
except Exception as e:
    info["device"] = f"unknown ({e})"
try:
    import torch
    info["torch"], info["cuda"] = torch.__version__, torch.version.cuda
except Exception as e:
    info["torch"] = f"missing ({e})"
info["cpus"] = os.cpu_count()
info["memTotalGiB"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
json.dump(info, open(sys.argv[1], "w"))
print(json.dumps(info))
EOF
log "disk: $(df -h "$W" | tail -n1 | awk '{print $4" free on "$6}'); tmpfs: $(df -h "$IMG" | tail -n1 | awk '{print $4" free on "$6}')"
[ -n "${CHECK_ONLY:-}" ] && exit 0

drop_caches() {
  sync
  if echo 3 >/proc/sys/vm/drop_caches 2>/dev/null; then echo true; else echo false; fi
}

# ---- the floor: host<->device copy bandwidth
if [ "$BENCH_PATH" = direct ]; then
  log "bandwidth (pinned and pageable, 4 GiB)"
  "$PY" "$DEC" --bandwidth --bw-gib 4 --timings "$R/bandwidth.json" || log "bandwidth measurement failed"
fi

# The model's weights (once) and the uninterrupted reference run; sets `common` (the decoder's arguments).
common=()
model_and_reference() {
  local c=$1 ctx=$2 n=$3 model
  model="$W/models/$c"
  if [ ! -s "$model/config.json" ]; then
    log "$c: creating random bf16 weights in $model"
    "$PY" "$DEC" --create --config "$c" --model-dir "$model" || { log "$c: weight creation failed"; return 1; }
  fi
  common=("$DEC" --config "$c" --model-dir "$model" --ctx "$ctx" --new-tokens "$n" --token-interval-ms "$TOKEN_INTERVAL_MS")
  local dropped
  dropped=$(drop_caches)
  log "$c: reference run (uninterrupted; page cache dropped: $dropped)"
  "$NODE" "$B/migrate.mjs" reference --label "$c" --python "$PY" \
    --decoder-args "$(printf '%s\n' "${common[@]}" --out "$R/$c.ref.tokens" --timings "$R/$c.ref.timings.json" --reference | "$PY" -c 'import json,sys; print(json.dumps(sys.stdin.read().splitlines()))')" \
    --tokens "$R/$c.ref.tokens" --log "$R/$c.ref.log" --result "$R/$c.ref.launch.json" || { log "$c: reference run failed"; return 1; }
}

run_direct() {
  local spec=$1 c ctx n
  IFS=: read -r c ctx n <<<"$spec"
  model_and_reference "$c" "$ctx" "$n" || return 1
  local via rc=0 dropped
  for via in $VIA; do
    # VIA entries: engine | commands | pageserver, optionally +emptycache (the decoder releases the allocator's
    # cached blocks after its prefill, so only live GPU memory moves)
    local extra=()
    [[ "$via" == *+emptycache ]] && extra=(--empty-cache)
    dropped=$(drop_caches)
    log "$c: migrated run via $via (page cache dropped: $dropped)"
    "$NODE" "$B/migrate.mjs" migrate --label "$c" --via "${via%%+*}" --python "$PY" \
      --decoder-args "$(printf '%s\n' "${common[@]}" "${extra[@]}" --out "$R/$c.$via.tokens" --timings "$R/$c.$via.timings.json" | "$PY" -c 'import json,sys; print(json.dumps(sys.stdin.read().splitlines()))')" \
      --tokens "$R/$c.$via.tokens" --timings "$R/$c.$via.timings.json" --log "$R/$c.$via.log" \
      --work "$IMG/$c.$via" --criu "$CRIU" --helper "$HELPER" --migrate-at "$MIGRATE_AT" \
      --reference-tokens "$R/$c.ref.tokens" --result "$R/$c.$via.migrate.json" --timeout-s "${MIGRATE_TIMEOUT_S:-300}" || rc=1
    for f in "$IMG/$c.$via"/*/*.log; do [ -f "$f" ] && cp "$f" "$R/$c.$via.$(basename "$(dirname "$f")").$(basename "$f")"; done
    rm -rf "${IMG:?}/$c.$via"
  done
  return $rc
}

# A free TCP port on 127.0.0.1 (for Redis, the decoder's control endpoint).
free_port() { "$NODE" -e 'const s=require("node:net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
json_argv() { "$NODE" -e 'console.log(JSON.stringify(process.argv.slice(1)))' -- "$@"; }

REDIS_PID=""
stop_redis() { [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null; REDIS_PID=""; }
trap stop_redis EXIT

run_agents() {
  # The agent path: Redis, two `spotwatch agent` processes (node-a, node-b) with their own AWS emulators, the task
  # started with `spotwatch run` on node-a, a spot interruption fired at node-a's emulator; spotwatch plans,
  # checkpoints it (CUDA hook + CRIU), streams it to node-b and restores it there (bench/gpu/agents.ts).
  local spec=$1 c ctx n
  IFS=: read -r c ctx n <<<"$spec"
  [ -s "$B/spotwatch.mjs" ] && [ -s "$B/agents.mjs" ] || die "agent path: no $B/spotwatch.mjs or agents.mjs (run bench/gpu/prepare.sh after npm run build)"
  "$NODE" "$B/spotwatch.mjs" agent --help >/dev/null 2>"$R/cli-check.err" || die "agent path: the CLI bundle does not run: $(tail -n 3 "$R/cli-check.err")"
  [ -s "$B/spotwatch.source" ] && log "CLI bundle source: $(tr '\n' ' ' <"$B/spotwatch.source")"

  # Redis: our own, on a free port, nothing persisted.
  local port
  port=$(free_port)
  "$REDIS" --bind 127.0.0.1 --port "$port" --save '' --appendonly no --dir "$W" --logfile "$R/redis.log" &
  REDIS_PID=$!
  for _ in $(seq 100); do "$NODE" -e 'const c=require("node:net").connect(+process.argv[1],"127.0.0.1");c.on("connect",()=>process.exit(0));c.on("error",()=>process.exit(1))' "$port" && break; sleep 0.1; done

  local task_args expect_gpu=true timings=()
  local tokens="$R/$c.agents.tokens"
  rm -f "$tokens" "$R/$c.agents.timings.json"
  local run_args="[]"
  if [ "$BENCH_TASK" = toy ]; then
    # CPU rehearsal: the toy LLM ("context" = prompt tokens), 64 MiB of state
    local toy="$ROOT/examples/toy-llm/toy-llm.mjs" targs=(--prompt-tokens "$ctx" --state-mib 64 --tokens "$n" --interval-ms 20 --seed 11)
    "$NODE" "$toy" --reference "${targs[@]}" >"$R/$c.ref.tokens" || die "toy reference failed"
    if [ -n "${SPOTWATCH_GPU_DECODER_STAGE:-}" ]; then
      # the toy stages its cache (and a journal of later writes), as the decoder stages its KV cache's prefix
      local cport
      cport=$(free_port)
      targs+=(--control-port "$cport")
      run_args=$(json_argv --prepare-url "http://127.0.0.1:$cport/prepare" --resume-url "http://127.0.0.1:$cport/resume" --releasable-mib 64 \
        --stage-url "http://127.0.0.1:$cport/stage" --staged-mib 64)
    fi
    task_args=$(json_argv "$NODE" "$toy" "${targs[@]}" --out "$tokens")
    expect_gpu=false
  else
    model_and_reference "$c" "$ctx" "$n" || { stop_redis; return 1; }
    # SPOTWATCH_GPU_DECODER_EMPTY_CACHE=1: the decoder releases the allocator's cached blocks after its prefill
    # (an application's choice, as in the direct path's +emptycache; tokens are the same).
    # SPOTWATCH_GPU_DECODER_CONTROL=1: the decoder keeps its weights in memory it can give back (--vmm-weights) and
    # serves spotwatch's task control; `spotwatch run` registers its prepare/resume endpoints.
    local ctl_args=()
    if [ -n "${SPOTWATCH_GPU_DECODER_CONTROL:-}" ]; then
      local cport
      cport=$(free_port)
      ctl_args=(--vmm-weights --control-port "$cport")
      # what the decoder releases on prepare: its weights (bf16, 2 bytes a parameter), for the planner's estimate
      local wmib
      wmib=$("$PY" -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["params"] * 2 / 1048576))' "$W/models/$c/config.json")
      run_args=$(json_argv --prepare-url "http://127.0.0.1:$cport/prepare" --resume-url "http://127.0.0.1:$cport/resume" --releasable-mib "$wmib")
      if [ -n "${SPOTWATCH_GPU_DECODER_STAGE:-}" ]; then
        # the KV cache (bf16, K and V per layer) is staged ahead of the freeze and released on prepare as well
        local kvmib
        kvmib=$("$PY" -c 'import json,sys; c=json.load(open(sys.argv[1])); print(int(2 * c["layers"] * c["kv_heads"] * (int(sys.argv[2]) + int(sys.argv[3]) + 8) * (c["dim"] // c["heads"]) * 2 / 1048576))' "$W/models/$c/config.json" "$ctx" "$n")
        ctl_args+=(--vmm-kv --release-graph)
        run_args=$(json_argv --prepare-url "http://127.0.0.1:$cport/prepare" --resume-url "http://127.0.0.1:$cport/resume" --releasable-mib "$((wmib + kvmib))" \
          --stage-url "http://127.0.0.1:$cport/stage" --staged-mib "$kvmib")
      fi
    fi
    task_args=$(json_argv "$PY" "${common[@]}" ${SPOTWATCH_GPU_DECODER_EMPTY_CACHE:+--empty-cache} "${ctl_args[@]}" --out "$tokens" --timings "$R/$c.agents.timings.json")
    timings=(--timings "$R/$c.agents.timings.json")
  fi
  local dropped=false
  [ "$BENCH_TASK" = toy ] || dropped=$(drop_caches)
  log "$c: agent path: two agents, spotwatch run on node-a, interruption after $MIGRATE_AT tokens (page cache dropped: $dropped)"
  # Under a subreaper (bench/gpu/subreaper.py): the source task's zombie is reaped at once, as on a real node.
  "${PY:-python3}" "$ROOT/bench/gpu/subreaper.py" "$NODE" "$B/agents.mjs" migrate --label "$c" --node "$NODE" --cli "$B/spotwatch.mjs" --redis-url "redis://127.0.0.1:$port" \
    --initial-rates "${SPOTWATCH_GPU_INITIAL_RATES:-stream=1.3GB,restore=1.4GB,gpu=1.5GB}" \
    --base-dir "$IMG" --task-args "$task_args" --run-args "$run_args" --tokens "$tokens" "${timings[@]}" --reference-tokens "$R/$c.ref.tokens" \
    --log "$R/$c.agents.log" --agent-logs "$R" --result "$R/$c.agents.migrate.json" --migrate-at "$MIGRATE_AT" \
    --expect-gpu "$expect_gpu" --timeout-s "${MIGRATE_TIMEOUT_S:-300}"
  local rc=$?
  stop_redis
  return $rc
}

names=()
report() {
  if [ "$BENCH_PATH" = agents ]; then
    local c=${names[0]%%.*}
    "$NODE" "$B/agents.mjs" report --result "$R/$c.agents.migrate.json" --info "$R/info.json" --ref-timings "$R/$c.ref.timings.json" --source "$B/spotwatch.source" --results-dir "$RESULTS_DIR"
  else
    "$NODE" "$B/migrate.mjs" report --configs "$(IFS=,; echo "${names[*]}")" --dir "$R" --results-dir "$RESULTS_DIR" --path "$BENCH_PATH"
  fi
  local rc=$?
  if [ -n "${OUT:-}" ]; then
    mkdir -p "$OUT/logs"
    cp "$RESULTS_DIR"/gpu-*.json "$OUT/" 2>/dev/null
    [ "$BENCH_PATH" = agents ] && cp "$R"/*.agents.migrate.json "$R/info.json" "$OUT/" 2>/dev/null
    (cd "$R" && tar -czf "$OUT/logs/gpu-bench-logs.tgz" --exclude='*.tokens' . 2>/dev/null)
  fi
  return $rc
}
case "$BENCH_PATH" in
  direct)
    for spec in $CONFIGS; do
      for via in $VIA; do names+=("${spec%%:*}.$via"); done
      run_direct "$spec" || log "${spec%%:*}: FAILED"
      report >"$R/report.partial.txt" 2>&1 # partial results survive a run cut short
    done
    ;;
  agents)
    spec=${CONFIGS%% *}
    names=("${spec%%:*}.agents")
    run_agents "$spec" || log "${spec%%:*}: agent path FAILED"
    ;;
  *) die "unknown SPOTWATCH_GPU_BENCH_PATH=$BENCH_PATH (direct|agents)" ;;
esac
report
