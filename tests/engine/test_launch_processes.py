"""Processes started as srun starts them (SLURM variables in their environment, loopback rendezvous)
join one world through ``launch_from_args``; a task layout Detectron2's per-machine group cannot
describe stops every process with a message instead of a wrong local rank."""
import json
import socket
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT, tool_env

# End to end (processes): deselect with -m "not slow".
pytestmark = pytest.mark.slow

SCRIPT = """
import json, sys
import torch, torch.distributed as dist
from detectron2.engine import default_argument_parser
from detectron2.utils import comm
from hrnext_d2.engine.launch import add_launcher_argument, launch_from_args

def main(args):
    t = torch.tensor([float(comm.get_rank() + 1)])
    dist.all_reduce(t)
    print("RESULT " + json.dumps({"rank": comm.get_rank(), "world": comm.get_world_size(),
          "local_rank": comm.get_local_rank(), "local_size": comm.get_local_size(), "sum": t.item(),
          "backend": dist.get_backend()}), flush=True)

launch_from_args(main, add_launcher_argument(default_argument_parser()).parse_args(sys.argv[1:]))
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _srun(node_ids, tasks_per_node, timeout=120):
    """Two tasks of one SLURM job step on this machine; returns [(returncode, output)]."""
    port = str(_free_port())
    procs = []
    for rank, node in enumerate(node_ids):
        env = tool_env(OMP_NUM_THREADS="1", SLURM_JOB_ID="4242", SLURM_STEP_ID="0", SLURM_NTASKS="2",
                       SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank % tasks_per_node[node]),
                       SLURM_NODEID=str(node), SLURM_JOB_NODELIST="localhost",
                       SLURM_TASKS_PER_NODE=",".join(map(str, tasks_per_node)),
                       MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):  # not started by torchrun
            env.pop(key, None)
        procs.append(subprocess.Popen([sys.executable, "-c", SCRIPT, "--launcher", "slurm"], cwd=REPO_ROOT,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    results = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        finally:
            if p.poll() is None:
                p.kill()
        results.append((p.returncode, out))
    return results


def test_srun_tasks_join_one_world():
    results = _srun(node_ids=[0, 0], tasks_per_node=[2])
    seen = []
    for code, out in results:
        assert code == 0, out[-3000:]
        seen.append(json.loads(out.split("RESULT ", 1)[1].splitlines()[0]))
    assert sorted((r["rank"], r["local_rank"]) for r in seen) == [(0, 0), (1, 1)]
    assert all(r["world"] == 2 and r["local_size"] == 2 and r["sum"] == 3.0 and r["backend"] == "gloo" for r in seen)


def test_task_layout_without_consecutive_ranks_per_machine_fails_in_every_process():
    # rank 1 says it is local rank 1 of 2 on machine 1: Detectron2's per-machine groups would be wrong
    results = _srun(node_ids=[0, 1], tasks_per_node=[2, 2])
    for code, out in results:
        assert code != 0
        assert "every machine must run the same number of processes holding consecutive ranks" in out, out[-3000:]
        assert "rank 1: machine 1 local rank 1 of 2" in out
