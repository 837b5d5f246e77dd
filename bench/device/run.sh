#!/usr/bin/env bash
# The GPU benchmarks, for one call of the device tool each (a call may run 10 minutes):
#
#   bash bench/device/wheels.sh                          # here, once: the wheels into .whl/
#   run(command="SDBOT_COMMIT=<git rev-parse HEAD> bash bench/device/run.sh fast", carry=[".whl"], timeout_s=600)
#   run(command="SDBOT_COMMIT=<...> bash bench/device/run.sh compile [MODE]", carry=[".whl"], timeout_s=600)
#   run(command="SDBOT_COMMIT=<...> bash bench/device/run.sh batching", carry=[".whl"], timeout_s=600)
#   run(command="SDBOT_COMMIT=<...> bash bench/device/run.sh saving", carry=[".whl"], timeout_s=600)
#   run(command="SDBOT_COMMIT=<...> bash bench/device/run.sh extras", carry=[".whl"], timeout_s=600)
#   run(command="SDBOT_COMMIT=<...> BUDGET=540 bash bench/device/run.sh all", carry=[".whl"], timeout_s=600)
#   run(command="SDBOT_COMMIT=<...> bash bench/device/run.sh sdxl", carry=[".whl"], timeout_s=600)
#
# (The tree travels without .git: SDBOT_COMMIT is the commit the JSON records.)
# "fast": bench.pipeline on SD 1.5's architecture (512 px, 20 steps, Euler a, CFG 7, fp16;
# the worker's fast path against the plain call, batches 1, 4, 8, and --ablate: generate()
# without the fast-path options) and bench.upscale (512 ->
# 2048 px, untiled and 256 px tiles). "compile [MODE]": bench.compile_cache (what compiling
# costs, then what a restart pays with the cache folder filled), then bench.pipeline at batch 1
# with the worker's torch.compile in MODE (default reduce-overhead: CUDA graphs, for the launch
# overhead that bounds batch 1) on that same folder, so its warm-up loads instead of compiling.
# "batching": bench.batching, 2, 4 and 8 members' jobs one by one and as one pass. "saving":
# bench.worker_stream, jobs of 8 images back to back with their PNGs written while the next
# generates and before it. "extras": bench.previews (approx and TAESD at every step against
# none, 4 images), bench.model_switch (two SD 1.5 folders, one at a time against a budget) and
# bench.pipeline with low_memory = "slicing" beside an unaccelerated copy (peak memory).
# "sdxl": bench.pipeline on SDXL base's full architecture (random weights, built on the machine
# in about two minutes), 1024 px, 30 steps, Euler a, CFG 7, fp16, batches 1 and 4: the
# worker's path against a plain diffusers call; then bench.single_file_load (an SDXL single
# file from disk: bare, and read ahead with progress as a job's first load is) with what is left.
# "all": for a session lent one machine for one call, most important first, each in what is
# left of BUDGET seconds: the compiled pipeline at batch 1 (MODE, default reduce-overhead),
# worker_stream, previews, model_switch, upscale, batching at 8 jobs, the uncompiled pipeline. Each
# benchmark has its own time limit, so one that hangs leaves the others their time; the JSON
# and logs land in $OUT, whence they are copied into bench/results and committed.
#
# Rehearsed here on the CPU, tiny model (the wheels installed over this venv's same versions):
#   OUT=$(mktemp -d) PYTHON=.venv/bin/python DEVICE=cpu MODEL=tiny UPSCALE_SIZE=32 bash bench/device/run.sh fast
set -uo pipefail
stage=${1:-fast}
out=${OUT:?run this through the device tool, which sets OUT}
python=${PYTHON:-python3} device=${DEVICE:-cuda} model=${MODEL:-sd15} upscale_size=${UPSCALE_SIZE:-512}
"$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1
# The GPU's description heads the log: the device tool brings back at most 8 files, and
# "all" writes 7 JSON files and its log.
if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee -a "$out/$stage.log"
fi
models=/tmp/sdbot-bench-models  # built once per machine, shared by the runs of one call

bench() {  # bench SECONDS NAME ARGS...: one benchmark, its log beside its JSON
    local limit=$1 name=$2
    shift 2
    echo "== $name: python -m $* (at most $limit s)" | tee -a "$out/$stage.log"
    timeout --kill-after=10 "$limit" "$python" -m "$@" --output-dir "$out" 2>&1 | tee -a "$out/$stage.log"
    echo "== $name: exit ${PIPESTATUS[0]} after $SECONDS s" | tee -a "$out/$stage.log"
}
left() {  # left CAP: the seconds left of BUDGET, at most CAP
    local rest=$(( ${BUDGET:-540} - SECONDS ))
    echo $(( rest < $1 ? rest : $1 ))
}

case $stage in
    fast)
        bench 330 pipeline bench.pipeline --device "$device" --model "$model" --model-cache "$models" --ablate
        bench 180 upscale bench.upscale --device "$device" --size "$upscale_size" --tile 256 --overlap 32
        ;;
    compile)
        mode=${2:-reduce-overhead}
        cache=/tmp/sdbot-compile-cache/$mode-$$  # new for each call: the cold start needs it empty
        bench "$(left 400)" compile_cache bench.compile_cache --device "$device" --model "$model" \
            --model-cache "$models" --mode "$mode" --compile-cache "$cache"
        bench "$(left 540)" pipeline_compile bench.pipeline --device "$device" --model "$model" --model-cache "$models" \
            --compile "$mode" --compile-cache "$cache" --batches 1 --repeats 3
        ;;
    batching)
        bench 540 batching bench.batching --device "$device" --model "$model" --model-cache "$models"
        ;;
    saving)
        bench 540 worker_stream bench.worker_stream --device "$device" --model "$model" --model-cache "$models"
        ;;
    extras)
        bench 150 previews bench.previews --device "$device" --model "$model" --model-cache "$models"
        bench "$(left 200)" model_switch bench.model_switch --device "$device" --model "$model" --model-cache "$models"
        bench "$(left 540)" pipeline_low_memory bench.pipeline --device "$device" --model "$model" \
            --model-cache "$models" --low-memory slicing --ablate --repeats 3
        ;;
    all)
        # What this suite has not measured on a GPU first: the compiled call against the plain one,
        # then background saving; then what was measured once already, to see it at this commit.
        cache=/tmp/sdbot-compile-cache/all-$$
        bench "$(left 330)" pipeline_compile bench.pipeline --device "$device" --model "$model" --model-cache "$models" \
            --compile "${2:-reduce-overhead}" --compile-cache "$cache" --batches 1 --repeats 3
        bench "$(left 150)" worker_stream bench.worker_stream --device "$device" --model "$model" \
            --model-cache "$models" --repeats 3
        bench "$(left 60)" previews bench.previews --device "$device" --model "$model" --model-cache "$models" \
            --repeats 3 --alone 10
        bench "$(left 90)" model_switch bench.model_switch --device "$device" --model "$model" \
            --model-cache "$models" --repeats 3
        bench "$(left 90)" upscale bench.upscale --device "$device" --size "$upscale_size" --tile 256 --overlap 32
        bench "$(left 120)" batching bench.batching --device "$device" --model "$model" --model-cache "$models" \
            --jobs 8 --repeats 3
        bench "$(left 210)" pipeline bench.pipeline --device "$device" --model "$model" --model-cache "$models" \
            --repeats 3 --ablate
        ;;
    sdxl)
        sdxl=${SDXL_MODEL:-sdxl}  # tiny-sdxl to rehearse on a CPU
        bench "$(left 420)" pipeline_sdxl bench.pipeline --device "$device" --model "$sdxl" --model-cache "$models" \
            --batches 1,4 --repeats 3
        bench "$(left 540)" single_file_load bench.single_file_load --device "$device" --repeats 2 \
            --model-cache "$models" $([ "$sdxl" = tiny-sdxl ] && echo --tiny)
        ;;
    *)
        echo "usage: bench/device/run.sh fast|compile [MODE]|batching|saving|extras|all|sdxl" >&2
        exit 2
        ;;
esac
