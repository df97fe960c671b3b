"""Reading the world torchrun or srun started a process in, and refusing command lines that describe
another one (no processes started here; tests/engine/test_launch_processes.py starts them)."""
import argparse

import pytest

from hrnext_d2.engine.launch import (
    LaunchError,
    add_launcher_argument,
    detect_distributed_environment,
    expand_slurm_nodelist,
    expand_slurm_tasks_per_node,
    launch_from_args,
)

TORCHRUN = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "GROUP_RANK": "1",
            "MASTER_ADDR": "10.0.0.5", "MASTER_PORT": "29500"}
SRUN = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_STEP_ID": "0",
        "SLURM_JOB_ID": "123456", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_TASKS_PER_NODE": "4(x2)"}


def _args(*argv):
    from detectron2.engine import default_argument_parser

    return add_launcher_argument(default_argument_parser()).parse_args(list(argv))


def test_expand_slurm_nodelist():
    assert expand_slurm_nodelist("node[01-03,07],gpu-a[1-2]-ib,login1") == [
        "node01", "node02", "node03", "node07", "gpu-a1-ib", "gpu-a2-ib", "login1"]
    assert expand_slurm_nodelist("r[1-2]n[08-10]") == ["r1n08", "r1n09", "r1n10", "r2n08", "r2n09", "r2n10"]
    assert expand_slurm_nodelist("single") == ["single"]
    assert expand_slurm_nodelist("n[9-11]") == ["n9", "n10", "n11"]
    with pytest.raises(ValueError, match="unbalanced"):
        expand_slurm_nodelist("node[01-03")
    with pytest.raises(ValueError, match="bad range 'a-b'"):
        expand_slurm_nodelist("node[a-b]")
    assert expand_slurm_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert expand_slurm_tasks_per_node("8") == [8]


def test_torchrun_environment():
    env = detect_distributed_environment(TORCHRUN)
    assert (env.launcher, env.rank, env.world_size, env.local_rank, env.local_world_size) == ("torchrun", 3, 4, 1, 2)
    assert (env.machine_rank, env.num_machines, env.init_method) == (1, 2, "env://")
    # srun torchrun ...: torchrun's variables describe the processes
    assert detect_distributed_environment({**SRUN, **TORCHRUN}).launcher == "torchrun"
    with pytest.raises(LaunchError, match="MASTER_PORT missing"):
        detect_distributed_environment({k: v for k, v in TORCHRUN.items() if k != "MASTER_PORT"})
    with pytest.raises(LaunchError, match="RANK='x'"):
        detect_distributed_environment({**TORCHRUN, "RANK": "x"})


def test_srun_environment():
    env = detect_distributed_environment(SRUN)
    assert (env.launcher, env.rank, env.world_size, env.local_rank, env.local_world_size) == ("slurm", 5, 8, 1, 4)
    assert (env.machine_rank, env.num_machines, env.master_addr) == (1, 2, "gpu07")
    assert env.init_method == "tcp://gpu07:18456"  # 15000 + job id % 20000: the same in every task
    env = detect_distributed_environment({**SRUN, "MASTER_ADDR": "fe80::1", "MASTER_PORT": "2345"})
    assert env.init_method == "tcp://[fe80::1]:2345"
    # the batch script of the allocation (no srun step) and one-task steps are single launches
    assert detect_distributed_environment({k: v for k, v in SRUN.items() if k != "SLURM_STEP_ID"}) is None
    assert detect_distributed_environment({**SRUN, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None
    assert detect_distributed_environment({}) is None


def test_command_line_conflicting_with_the_environment_is_an_error():
    def never(args):
        raise AssertionError("must not run")

    with pytest.raises(LaunchError, match=r"started by torchrun .* given --num-gpus 2: .*drop --num-gpus 2"):
        launch_from_args(never, _args("--num-gpus", "2"), environ=TORCHRUN)
    with pytest.raises(LaunchError, match=r"started by slurm .* --num-machines 2, --machine-rank 1: .*srun"):
        launch_from_args(never, _args("--num-machines", "2", "--machine-rank", "1"), environ=SRUN)
    with pytest.raises(LaunchError, match="--launcher torchrun, but this process has no torchrun environment"):
        launch_from_args(never, _args("--launcher", "torchrun"), environ={})
    with pytest.raises(LaunchError, match="--launcher slurm"):
        launch_from_args(never, _args("--launcher", "slurm"), environ=TORCHRUN)


def test_single_process_worlds_run_in_this_process():
    one = {**TORCHRUN, "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1", "GROUP_RANK": "0"}
    assert launch_from_args(lambda a: ("ran", a.num_gpus), _args(), environ=one) == ("ran", 1)
    # --launcher detectron2 ignores the environment: Detectron2's launch with --num-gpus 1 runs here
    ran = []
    launch_from_args(lambda a: ran.append("d2"), _args("--launcher", "detectron2"), environ=TORCHRUN)
    launch_from_args(lambda a: ran.append("plain"), _args(), environ={})
    assert ran == ["d2", "plain"]
    assert isinstance(_args(), argparse.Namespace) and _args().launcher == "auto"
