"""modernbert.ray on a local Ray cluster (loopback only, usage statistics off, bounded in time):
two actors over a few thousand texts give exactly a single-process `encode`, each id once, and
both actors did part of the work."""

import os

import numpy as np
import pytest
from conftest import fixture

import modernbert
import modernbert.ray
import ray

ST = fixture("st_mean_normalize_prompts")


class TaggedEmbedder(modernbert.ray.Embedder):
    """The package's Embedder, plus the actor's process id per row (which actor embedded it)."""

    def __call__(self, batch):
        out = super().__call__(batch)
        out["pid"] = np.full(len(out["id"]), os.getpid())
        return out


@pytest.fixture(scope="module")
def cluster():
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        _node_ip_address="127.0.0.1",
        # The actors import TaggedEmbedder from this file, and the package from where we do.
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(
            [os.path.dirname(os.path.abspath(__file__)), os.path.dirname(os.path.dirname(modernbert.__file__))]
        )}},
    )
    yield
    ray.shutdown()


@pytest.mark.timeout(300)
def test_two_actors_equal_one_process_and_keep_every_id_once(cluster):
    n = 3000
    ids = np.arange(10_000, 10_000 + n)
    texts = [f"document {i}: " + "some words " * (i % 23) for i in range(n)]
    ds = ray.data.from_items([{"id": int(i), "text": t} for i, t in zip(ids, texts)], override_num_blocks=12)
    out = ds.map_batches(
        TaggedEmbedder,
        fn_constructor_kwargs=dict(model=ST, device="cpu", prompt_name="query"),
        batch_size=250,
        batch_format="numpy",
        concurrency=2,
        num_cpus=1,
    )
    rows = out.take_all()
    got_ids = np.array([r["id"] for r in rows])
    # Every id exactly once: a dropped or duplicated batch fails here.
    assert len(got_ids) == n and np.array_equal(np.sort(got_ids), ids)
    assert len({r["pid"] for r in rows}) == 2, "both actors should have embedded part of the corpus"
    single = modernbert.Model(ST, device="cpu").encode(texts, prompt_name="query")
    by_id = {r["id"]: r["embedding"] for r in rows}
    vectors = np.stack([by_id[i] for i in ids])
    assert vectors.dtype == np.float32 and vectors.shape == single.shape
    assert np.array_equal(vectors, single)
