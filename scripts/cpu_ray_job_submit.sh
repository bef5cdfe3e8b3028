#!/usr/bin/env bash
# `ray job submit -- python3 -m openrlhf.cli.train_ppo_ray ...` on a CPU machine, against a private Ray cluster.
#
#   bash scripts/cpu_ray_job_submit.sh -- python3 -m openrlhf.cli.train_ppo_ray --actor.model_name_or_path ... 
#
# On CPU the cluster must be started with logical GPUs (`ray start --head --num-gpus 8 --num-cpus 8`): OpenRLHF's
# placement groups ask for {"GPU": 1, "CPU": 1} bundles, and the CPU backend refuses to join a cluster without GPUs.
# This script starts such a head node on free ports (so it cannot collide with other Ray instances on the machine),
# submits the job, and stops only the processes of that cluster (by a marker in their environment; `ray stop` would
# stop every `ray start` cluster of the machine). Environment for the job is inherited from this shell.
# While it runs, a plain `ray.init()` elsewhere on this node would join this cluster (Ray's default after
# `ray start`); afterwards the node's previous default cluster record is restored.
set -euo pipefail
[ "${1:-}" = "--" ] && shift
MARK="rank_grpo_ray_job_$$_$RANDOM"
read -r -a P < <(python3 -c "
import socket
ss = [socket.socket() for _ in range(8)]
for s in ss: s.bind(('127.0.0.1', 0))
print(*[s.getsockname()[1] for s in ss])")
export RANK_GRPO_RAY_JOB_MARK="$MARK" HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" RAY_USAGE_STATS_ENABLED=0
export VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-1}" TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
unset RAY_ADDRESS
PREV_CLUSTER="$(cat /tmp/ray/ray_current_cluster 2>/dev/null || true)"

stop_cluster() {
    local pids=""
    for d in /proc/[0-9]*; do
        if tr '\0' '\n' < "$d/environ" 2>/dev/null | grep -qx "RANK_GRPO_RAY_JOB_MARK=$MARK"; then
            [ "${d#/proc/}" != "$$" ] && pids="$pids ${d#/proc/}"
        fi
    done
    [ -n "$pids" ] && kill $pids 2>/dev/null || true
    sleep 3
    for p in $pids; do [ -d "/proc/$p" ] && kill -9 "$p" 2>/dev/null || true; done
    # `ray start` recorded this cluster as the node's default; restore what was there before
    if grep -q ":${P[0]}\$" /tmp/ray/ray_current_cluster 2>/dev/null; then
        if [ -n "$PREV_CLUSTER" ]; then echo "$PREV_CLUSTER" > /tmp/ray/ray_current_cluster; else rm -f /tmp/ray/ray_current_cluster; fi
    fi
}
trap stop_cluster EXIT

ray start --head --port "${P[0]}" --dashboard-port "${P[1]}" --ray-client-server-port "${P[2]}" \
    --dashboard-agent-listen-port "${P[3]}" --dashboard-agent-grpc-port "${P[4]}" --metrics-export-port "${P[5]}" \
    --runtime-env-agent-port "${P[6]}" --node-manager-port "${P[7]}" \
    --num-gpus "${RAY_NUM_GPUS:-8}" --num-cpus "${RAY_NUM_CPUS:-8}" --include-dashboard true --disable-usage-stats
for i in $(seq 1 30); do   # the job agent needs a few seconds after `ray start`
    if ray job list --address "http://127.0.0.1:${P[1]}" >/dev/null 2>&1; then break; fi
    sleep 2
done
sleep 5
ray job submit --address "http://127.0.0.1:${P[1]}" -- "$@"
