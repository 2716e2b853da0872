"""More than one machine: two torchrun "nodes" on this machine (--nnodes=2, a localhost c10d rendezvous,
gloo) train the toy recipe as one DDP job of two ranks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TOY_RECIPE, needs_toy

pytestmark = [needs_toy, pytest.mark.slow]  # two torchrun agents and two trainings: over 20 s here


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_train_as_one_ddp_job(tmp_path: Path):
    run = tmp_path / "two-nodes"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AQAKIT_")}
    env.update({"AQAKIT_LOAD_PLUGINS": "aqakit-plugin-toy", "OMP_NUM_THREADS": "1"})
    endpoint = f"127.0.0.1:{_free_port()}"
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={rank}", "--nproc_per_node=1",
         "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}", "--rdzv_id=aqakit-two-nodes",
         "-m", "aqakit", "train", str(TOY_RECIPE), "train.epochs=2", "--run-dir", str(run)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        for rank in (0, 1)]
    outputs = []
    try:
        for node in nodes:
            outputs.append(node.communicate(timeout=300))
    except subprocess.TimeoutExpired:
        pytest.fail("the two torchrun nodes did not finish in 300 s")
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)  # the agents' workers too: never leave them behind
                node.communicate()
    for node, (_, stderr) in zip(nodes, outputs):
        assert node.returncode == 0, stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["world_size"] == 2
    assert len(summary["weights_fingerprint"]) == 2 and len(set(summary["weights_fingerprint"])) == 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 4   # rank 0 alone writes
    assert sum(out.count('"run_dir"') for out, _ in outputs) == 1       # and alone prints the result
