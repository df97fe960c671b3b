"""Start training from the command line in every way people start it.

- ``tools/train_net.py --num-gpus N [--num-machines M --machine-rank R --dist-url tcp://HOST:PORT]``:
  Detectron2's ``launch`` spawns the N processes of this machine;
- ``torchrun --nproc_per_node N tools/train_net.py ...`` (``python -m torch.distributed.run``): the
  processes already exist, with RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK,
  MASTER_ADDR and MASTER_PORT in their environment;
- ``srun tools/train_net.py ...`` inside a SLURM allocation: one process per task, with
  SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_NODEID and the node list in the environment.

In the last two cases each process joins the world described by its environment (instead of
``launch`` starting a world of its own: N independent jobs writing the same files), sets its CUDA
device to its local rank, and creates Detectron2's per-machine process group as ``launch`` does.
``--num-gpus`` / ``--num-machines`` / ``--machine-rank`` then conflict with the environment: an error
says which to use.
"""
import argparse
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
import torch.distributed as dist
from detectron2.engine import launch
from detectron2.engine.launch import DEFAULT_TIMEOUT
from detectron2.utils import comm

__all__ = [
    "DistributedEnvironment",
    "LaunchError",
    "add_launcher_argument",
    "detect_distributed_environment",
    "expand_slurm_nodelist",
    "expand_slurm_tasks_per_node",
    "launch_from_args",
    "run_in_process_group",
]

logger = logging.getLogger(__name__)

LAUNCHERS = ("auto", "torchrun", "slurm", "detectron2")
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
SLURM_VARIABLES = ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "SLURM_STEP_ID")


class LaunchError(RuntimeError):
    """The command line and the environment describe different process worlds."""


@dataclass(frozen=True)
class DistributedEnvironment:
    """This process's place in a world started by torchrun or srun."""

    launcher: str  # "torchrun" or "slurm"
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    machine_rank: int
    num_machines: int
    master_addr: str
    master_port: int

    @property
    def init_method(self) -> str:
        if self.launcher == "torchrun":
            # torchrun's workers join the store its agent hosts at MASTER_ADDR:MASTER_PORT.
            return "env://"
        host = f"[{self.master_addr}]" if ":" in self.master_addr else self.master_addr
        return f"tcp://{host}:{self.master_port}"

    def describe(self) -> str:
        return (f"{self.launcher}: rank {self.rank} of {self.world_size} (machine {self.machine_rank} of "
                f"{self.num_machines}, local rank {self.local_rank} of {self.local_world_size}), "
                f"master {self.master_addr}:{self.master_port}")


# ---- SLURM's compressed lists ------------------------------------------------------------------
def _split_top_level(text: str) -> List[str]:
    """Split at commas outside brackets: "a[1-2,4],b" -> ["a[1-2,4]", "b"]."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in SLURM node list {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise ValueError(f"unbalanced '[' in SLURM node list {text!r}")
    parts.append("".join(cur))
    return [p for p in (x.strip() for x in parts) if p]


def _expand_range_list(body: str, nodelist: str) -> List[str]:
    out = []
    for item in body.split(","):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item.strip())
        if not m:
            raise ValueError(f"bad range {item!r} in SLURM node list {nodelist!r}")
        lo, hi = m.group(1), m.group(2) if m.group(2) is not None else m.group(1)
        if int(hi) < int(lo):
            raise ValueError(f"descending range {item!r} in SLURM node list {nodelist!r}")
        width = len(lo)  # "01-10": zero padding of the lower bound
        out += [str(i).zfill(width) for i in range(int(lo), int(hi) + 1)]
    return out


def expand_slurm_nodelist(nodelist: str) -> List[str]:
    """Host names of a compressed SLURM node list ("node[01-03,07],gpu-a[1-2]-ib" -> node01, node02,
    node03, node07, gpu-a1-ib, gpu-a2-ib), in SLURM's order; several bracket groups in one name
    expand as their product (as ``scontrol show hostnames``)."""
    hosts: List[str] = []
    for expr in _split_top_level(nodelist):
        names = [""]
        for literal, body in re.findall(r"([^\[\]]*)(?:\[([^\]]*)\])?", expr):
            if not literal and body == "":
                continue
            names = [n + literal for n in names]
            if body:
                names = [n + v for n in names for v in _expand_range_list(body, nodelist)]
        hosts += names
    return hosts


def expand_slurm_tasks_per_node(spec: str) -> List[int]:
    """SLURM_TASKS_PER_NODE ("2(x3),1") -> tasks of each node in node order ([2, 2, 2, 1])."""
    out: List[int] = []
    for item in spec.split(","):
        m = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", item)
        if not m:
            raise ValueError(f"cannot read SLURM_TASKS_PER_NODE {spec!r}")
        out += [int(m.group(1))] * int(m.group(2) or 1)
    return out


def _slurm_hostnames(nodelist: str) -> List[str]:
    """``scontrol show hostnames`` where SLURM's tools are installed, else our parser."""
    if shutil.which("scontrol"):
        try:
            res = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                                 text=True, timeout=30, check=True)
            hosts = res.stdout.split()
            if hosts:
                return hosts
        except (OSError, subprocess.SubprocessError) as e:
            logger.warning(f"scontrol show hostnames {nodelist} failed ({e}); expanding the list here")
    return expand_slurm_nodelist(nodelist)


# ---- detection ---------------------------------------------------------------------------------
def _int(env: Mapping[str, str], key: str) -> int:
    try:
        return int(env[key])
    except ValueError:
        raise LaunchError(f"environment variable {key}={env[key]!r} is not an integer") from None


def _torchrun_environment(env: Mapping[str, str]) -> DistributedEnvironment:
    missing = [k for k in TORCHRUN_VARIABLES if k not in env]
    if missing:
        raise LaunchError(f"RANK/WORLD_SIZE set but {', '.join(missing)} missing: start the processes with "
                          "torchrun (python -m torch.distributed.run), which sets them all")
    rank, world, local_rank = _int(env, "RANK"), _int(env, "WORLD_SIZE"), _int(env, "LOCAL_RANK")
    local_world = _int(env, "LOCAL_WORLD_SIZE") if "LOCAL_WORLD_SIZE" in env else world
    machine_rank = _int(env, "GROUP_RANK") if "GROUP_RANK" in env else rank // max(local_world, 1)
    return DistributedEnvironment(
        "torchrun", rank, world, local_rank, local_world, machine_rank,
        max(1, world // max(local_world, 1)), env["MASTER_ADDR"], _int(env, "MASTER_PORT"))


def _slurm_environment(env: Mapping[str, str]) -> DistributedEnvironment:
    tasks = "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS"
    rank, world, local_rank = _int(env, "SLURM_PROCID"), _int(env, tasks), _int(env, "SLURM_LOCALID")
    nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise LaunchError("SLURM task without SLURM_STEP_NODELIST / SLURM_JOB_NODELIST in its environment")
    hosts = _slurm_hostnames(nodelist)
    node_id = _int(env, "SLURM_NODEID") if "SLURM_NODEID" in env else 0
    per_node_spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    if per_node_spec:
        per_node = expand_slurm_tasks_per_node(per_node_spec)
        local_world = per_node[node_id] if node_id < len(per_node) else per_node[-1]
    else:
        local_world = world // max(len(hosts), 1)
    master_addr = env.get("MASTER_ADDR") or hosts[0]
    if "MASTER_PORT" in env:
        port = _int(env, "MASTER_PORT")
    else:
        # The same port in every task of the job, away from the ephemeral range's usual start.
        job = _int(env, "SLURM_JOB_ID") if "SLURM_JOB_ID" in env else 0
        port = 15000 + job % 20000
    num_machines = _int(env, "SLURM_STEP_NUM_NODES") if "SLURM_STEP_NUM_NODES" in env else len(hosts)
    return DistributedEnvironment("slurm", rank, world, local_rank, local_world, node_id, num_machines,
                                  master_addr, port)


def detect_distributed_environment(environ: Optional[Mapping[str, str]] = None) -> Optional[DistributedEnvironment]:
    """The world torchrun or srun started this process in, or None.

    torchrun's variables win over SLURM's (``srun torchrun ...``). A SLURM task counts only inside a
    job step (SLURM_STEP_ID: started by srun) of more than one task; the batch script of a multi-task
    allocation is one process (a warning says to start it with srun), and a one-task step leaves the
    process count to ``--num-gpus`` (one task per machine, Detectron2's ``launch`` spawning)."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return _torchrun_environment(env)
    if all(k in env for k in SLURM_VARIABLES[:3]):
        ntasks = _int(env, "SLURM_STEP_NUM_TASKS" if "SLURM_STEP_NUM_TASKS" in env else "SLURM_NTASKS")
        if "SLURM_STEP_ID" not in env:
            if ntasks > 1:
                logger.warning(f"SLURM allocation of {ntasks} tasks, but this process was not started by srun: "
                               "running as one launch (start it with srun to use every task)")
            return None
        if ntasks > 1:
            return _slurm_environment(env)
    return None


# ---- joining the world -------------------------------------------------------------------------
def _check_layout(env: DistributedEnvironment) -> None:
    """Detectron2's per-machine group needs machines of equal size holding consecutive ranks."""
    layouts = [None] * env.world_size
    dist.all_gather_object(layouts, (env.rank, env.machine_rank, env.local_rank, env.local_world_size))
    sizes = {lw for _, _, _, lw in layouts}
    bad = [(r, m, lr) for r, m, lr, lw in layouts if r != m * lw + lr]
    if len(sizes) != 1 or env.world_size % next(iter(sizes)) or bad:
        rows = ", ".join(f"rank {r}: machine {m} local rank {lr} of {lw}" for r, m, lr, lw in layouts)
        raise LaunchError(
            "every machine must run the same number of processes holding consecutive ranks "
            f"(SLURM: --ntasks-per-node and --distribution=block); got {rows}")


def _cuda_device(env: DistributedEnvironment) -> int:
    n = torch.cuda.device_count()
    if env.local_rank < n:
        return env.local_rank
    if n == 1:  # one GPU visible per task (srun --gpus-per-task=1, CUDA_VISIBLE_DEVICES per process)
        return 0
    raise LaunchError(f"local rank {env.local_rank} but only {n} CUDA devices visible: start at most one "
                      "process per GPU on each machine")


def run_in_process_group(main_func: Callable, env: DistributedEnvironment, args: Sequence[Any] = (),
                         timeout: timedelta = DEFAULT_TIMEOUT) -> Any:
    """Join ``env``'s process group (NCCL with CUDA, else gloo), create Detectron2's per-machine group,
    run ``main_func(*args)`` and leave the group."""
    if env.world_size == 1:
        return main_func(*args)
    has_gpu = torch.cuda.is_available()
    if has_gpu:
        torch.cuda.set_device(_cuda_device(env))
    logger.info(f"Joining the process group of {env.describe()}")
    dist.init_process_group(backend="nccl" if has_gpu else "gloo", init_method=env.init_method,
                            world_size=env.world_size, rank=env.rank, timeout=timeout)
    try:
        _check_layout(env)
        comm.create_local_process_group(env.local_world_size)
        comm.synchronize()
        return main_func(*args)
    finally:
        dist.destroy_process_group()


def add_launcher_argument(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--launcher`` for Detectron2's ``default_argument_parser``."""
    parser.add_argument(
        "--launcher", choices=LAUNCHERS, default="auto",
        help="auto: join the world of torchrun or srun when they started this process, else start "
             "--num-gpus processes with Detectron2's launch; torchrun / slurm: require that "
             "environment; detectron2: ignore it and use --num-gpus/--num-machines/--dist-url")
    return parser


def _conflict(env: DistributedEnvironment, args: argparse.Namespace) -> Optional[str]:
    given = [f"{flag} {value}" for flag, value, default in (
        ("--num-gpus", args.num_gpus, 1), ("--num-machines", args.num_machines, 1),
        ("--machine-rank", args.machine_rank, 0)) if value != default]
    if not given:
        return None
    if env.launcher == "torchrun":
        how = (f"torchrun already started {env.local_world_size} process(es) per machine "
               "(--nproc_per_node, --nnodes): drop " + " and ".join(given) + ", or run without torchrun "
               f"(`python tools/train_net.py {' '.join(given)} ...` spawns the processes itself)")
    else:
        how = (f"srun already started {env.world_size} tasks: drop " + " and ".join(given) + " and start one "
               "task per GPU (srun --ntasks-per-node=GPUS), or keep them with one task per machine and "
               "--launcher detectron2 --num-machines $SLURM_NNODES --machine-rank $SLURM_NODEID "
               "--dist-url tcp://FIRST_NODE:PORT")
    return f"this process was started by {env.launcher} ({env.describe()}) and given {', '.join(given)}: {how}"


def launch_from_args(main_func: Callable, args: argparse.Namespace,
                     environ: Optional[Mapping[str, str]] = None, timeout: timedelta = DEFAULT_TIMEOUT) -> Any:
    """Run ``main_func(args)`` in the world the command line (``--num-gpus`` ...) or the environment
    (torchrun, srun) describes; ``args.launcher`` chooses (see ``add_launcher_argument``)."""
    choice = getattr(args, "launcher", "auto")
    env = None if choice == "detectron2" else detect_distributed_environment(environ)
    if choice in ("torchrun", "slurm") and (env is None or env.launcher != choice):
        wanted = TORCHRUN_VARIABLES if choice == "torchrun" else SLURM_VARIABLES
        raise LaunchError(f"--launcher {choice}, but this process has no {choice} environment "
                          f"({', '.join(wanted)}) of more than one process")
    if env is None:
        return launch(main_func, args.num_gpus, num_machines=args.num_machines, machine_rank=args.machine_rank,
                      dist_url=args.dist_url, args=(args,), timeout=timeout)
    problem = _conflict(env, args)
    if problem:
        raise LaunchError(problem)
    return run_in_process_group(main_func, env, args=(args,), timeout=timeout)
