"""Shared fixtures: the committed checkpoints (tests/fixtures) and sentence-transformers' models of
the same directories, loaded in f32 on the CPU as the reference."""

import json
import pathlib
import shutil

import pytest

FIXTURES = pathlib.Path(__file__).resolve().parents[2] / "tests" / "fixtures"


def fixture(name: str) -> str:
    return str(FIXTURES / name)


@pytest.fixture(scope="session")
def st_hd64(tmp_path_factory) -> str:
    """A sentence-transformers model with head_dim 64 (what the GPU code path needs, so the
    emulated device can run it): the hd64 backbone fixture with the tokenizer and prompts of
    st_mean_normalize_prompts (same 512-token vocabulary), mean pooling and Normalize."""
    d = tmp_path_factory.mktemp("st_hd64")
    src = FIXTURES / "backbone_hd64_w16_l4_v5_f32"
    shutil.copy(src / "config.json", d)
    shutil.copy(src / "model.safetensors", d)
    prompts = FIXTURES / "st_mean_normalize_prompts"
    for f in ["tokenizer.json", "tokenizer_config.json", "modules.json", "sentence_bert_config.json",
              "config_sentence_transformers.json"]:
        shutil.copy(prompts / f, d)
    (d / "1_Pooling").mkdir()
    pooling = json.loads((prompts / "1_Pooling" / "config.json").read_text())
    pooling["word_embedding_dimension"] = json.loads((src / "config.json").read_text())["hidden_size"]
    (d / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (d / "2_Normalize").mkdir()
    return str(d)


def st_model(path: str):
    import torch
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu", model_kwargs={"dtype": torch.float32})


def cross_encoder(path: str):
    import torch
    from sentence_transformers import CrossEncoder

    return CrossEncoder(path, device="cpu", model_kwargs={"dtype": torch.float32})
