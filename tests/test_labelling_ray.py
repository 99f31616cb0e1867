"""The Ray runner of `mooer pseudo-label` on a local two-worker Ray cluster (loopback): a worker node killed
mid-job, every key still exactly once; a restarted job labels only what is missing.

Needs the ``ray`` extra (``pip install 'mooer[ray]'``): it fails, not skips, without it.
"""

from __future__ import annotations

import collections
import json
import threading
import time

import pytest

from fixtures_path import AUDIO, OFFICIAL_TINY
from mooer.labelling.inputs import Item
from mooer.labelling.jobs import read_labels, run_ray, shard_path
from mooer.labelling.label import TeacherSpec

BLOCKS = 40
SPECS = [TeacherSpec.parse(f"model={OFFICIAL_TINY},task=asr,preset=official", 0)]


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    # a head that runs nothing and two worker nodes; fast failure detection so the test stays short
    config = {"health_check_period_ms": 1000, "health_check_failure_threshold": 3,
              "health_check_initial_delay_ms": 1000}
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "_system_config": config})
    workers = [c.add_node(num_cpus=2) for _ in range(2)]
    ray.init(address=c.address, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield c, workers
    ray.shutdown()
    c.shutdown()


def _items() -> list[Item]:
    clips = ["zh1", "en1", "zh2", "demo"]
    return [Item(f"u{i:03d}", str(AUDIO / f"{clips[i % 4]}.wav")) for i in range(BLOCKS)]


def _keys_once(out) -> collections.Counter:
    return collections.Counter(r["key"] for r in read_labels(out))


def test_lost_worker_node_then_restart(cluster, tmp_path):
    c, workers = cluster
    items = _items()
    out = tmp_path / "labels"
    at_kill: list[int] = []

    def kill_one_node() -> None:  # once a few blocks are written, a worker node dies (raylet and workers)
        deadline = time.time() + 300
        while len(list(out.glob("labels-*.jsonl"))) < 3 and time.time() < deadline:
            time.sleep(0.05)
        at_kill.append(len(list(out.glob("labels-*.jsonl"))))
        c.remove_node(workers[1], allow_graceful=False)

    killer = threading.Thread(target=kill_one_node, daemon=True)
    killer.start()
    # each actor takes 0.5 CPU, so both fit on the surviving node next to the reading tasks
    summary = run_ray(items, out, SPECS, actors=2, actor_cpus=0.5, reader_cpus=0.25, block_size=1, threads=1,
                      log=None)
    killer.join(timeout=10)
    assert at_kill and at_kill[0] < BLOCKS, "the node must die while the job runs"
    assert summary.blocks == BLOCKS and summary.blocks_done_before == 0
    counts = _keys_once(out)
    assert sorted(counts) == [i.key for i in items] and set(counts.values()) == {1}

    # a stopped job: two shards lost; the restarted job labels exactly those two blocks
    for b in (5, 17):
        shard_path(out, b).unlink()
    kept = shard_path(out, 6).read_text(encoding="utf-8")
    again = run_ray(items, out, SPECS, actors=1, actor_cpus=0.5, reader_cpus=0.25, block_size=1, threads=1,
                    log=None)
    assert (again.blocks_done_before, again.utterances) == (BLOCKS - 2, 2)
    assert shard_path(out, 6).read_text(encoding="utf-8") == kept
    counts = _keys_once(out)
    assert sorted(counts) == [i.key for i in items] and set(counts.values()) == {1}
    record = json.loads(shard_path(out, 5).read_text(encoding="utf-8"))
    assert record["key"] == "u005" and record["teachers"][0]["name"] == "t0"
