"""`gapt-bench eval` on saved models: CE and MBE against independent computations, GPT-2 and Llama, a suite run's
own validation CE back, memorization on a planted case, safe loading, bad input, records in report and site."""

from __future__ import annotations

import json
import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from gapt_bench.cli import main
from gapt_bench.data.hf_tokenizers import to_transformers
from gapt_bench.data.sources import load_texts
from gapt_bench.data.tokenizers import ByteTokenizer, GPT2Tokenizer
from gapt_bench.measures.entropy import matrix_entropy
from gapt_bench.measures.membership import zlib_length
from gapt_bench.results.store import read_records

SEQ, MAX_TOKENS, BATCH, PATCH = 32, 2048, 16, 8


def _save(model, tokenizer, folder: Path, dtype=None) -> Path:
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def gpt2_folder(tmp_path_factory):
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=16, n_positions=64, vocab_size=50257)
    return _save(GPT2LMHeadModel(cfg), to_transformers(GPT2Tokenizer()), tmp_path_factory.mktemp("gpt2") / "tiny")


@pytest.fixture(scope="module")
def llama_folder(tmp_path_factory):
    torch.manual_seed(1)
    cfg = LlamaConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
        vocab_size=257,
        max_position_embeddings=64,
    )
    return _save(LlamaForCausalLM(cfg), to_transformers(ByteTokenizer()), tmp_path_factory.mktemp("llama") / "tiny")


def _eval(folder: Path, out: Path, *extra: str, model_args: str = "") -> int:
    args = f"pretrained={folder}" + (f",{model_args}" if model_args else "")
    argv = ["eval", "--model-args", args, "--seq-len", str(SEQ), "--max-tokens", str(MAX_TOKENS)]
    return main([*argv, "--batch-size", str(BATCH), "--mbe-windows", "16", "--out", str(out), "--quiet", *extra])


def _windows(suite_tokenizer) -> torch.Tensor:
    """The validation windows computed here, independently of gapt_bench.evaluation: the val documents' ids each
    followed by EOT, cut to MAX_TOKENS + 1, in windows of SEQ + 1 with stride SEQ."""
    stream: list[int] = []
    for doc in load_texts("offline", split="val"):
        stream += [*suite_tokenizer.encode(doc.text), suite_tokenizer.eot_id]
        if len(stream) >= MAX_TOKENS + 1:
            break
    stream = stream[: MAX_TOKENS + 1]
    n = (len(stream) - 1) // SEQ
    return torch.tensor([stream[j * SEQ : j * SEQ + SEQ + 1] for j in range(n)])


def _own_loss_and_mbe(model, windows: torch.Tensor, n_mbe: int) -> tuple[float, list[float]]:
    """The model's own loss (labels=inputs, mean over every window's targets) and MBE of every decoder block's
    output captured by hooks placed here."""
    model.eval()
    blocks = model.transformer.h if hasattr(model, "transformer") else model.model.layers
    outs: list[torch.Tensor] = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o[0] if isinstance(o, tuple) else o)) for b in blocks]
    with torch.no_grad():
        x = windows[:, :-1]
        loss = float(model(input_ids=x, labels=x).loss)  # shifts inside: predicts x[1:] from x[:-1]
        last = F.cross_entropy(model(input_ids=x).logits[:, -1].float(), windows[:, -1], reduction="sum")
        outs.clear()
        model(input_ids=x[:n_mbe])
    for h in hooks:
        h.remove()
    # labels=x leaves out each window's last target: add it back to get the mean over all SEQ targets per window
    total = loss * x.shape[0] * (SEQ - 1) + float(last)
    return total / (x.shape[0] * SEQ), [float(matrix_entropy(h.float(), 2.0, PATCH)) for h in outs]


def test_eval_of_a_saved_gpt2_gives_its_own_loss_and_the_mbe_of_its_hidden_states(gpt2_folder, tmp_path):
    assert _eval(gpt2_folder, tmp_path / "out") == 0
    (rec,) = read_records(tmp_path / "out")
    assert rec["kind"] == "evaluation" and rec["task"] == "evaluation" and rec["method"] == "tiny"
    model = GPT2LMHeadModel.from_pretrained(gpt2_folder)
    ce, mbe = _own_loss_and_mbe(model, _windows(GPT2Tokenizer()), 16)
    assert rec["metrics"]["ce"] == pytest.approx(ce, rel=1e-5)
    assert [rec["metrics"][f"mbe_layer_{i}"] for i in range(2)] == pytest.approx(mbe, rel=1e-4)
    assert rec["config"]["model"]["dtype"] == "float32"
    assert rec["config"]["model"]["content_hash"] and rec["n_params"] == sum(p.numel() for p in model.parameters())


def test_a_model_saved_in_bf16_evaluates_in_bf16(tmp_path):
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=1, n_head=2, n_embd=16, n_positions=64, vocab_size=257)
    folder = _save(GPT2LMHeadModel(cfg), to_transformers(ByteTokenizer()), tmp_path / "bf16", dtype=torch.bfloat16)
    assert _eval(folder, tmp_path / "out", "--measure", "ce") == 0
    (rec,) = read_records(tmp_path / "out")
    assert rec["config"]["model"]["dtype"] == "bfloat16"
    model = GPT2LMHeadModel.from_pretrained(folder, dtype=torch.bfloat16)
    assert next(model.parameters()).dtype == torch.bfloat16
    ce, _ = _own_loss_and_mbe(model, _windows(ByteTokenizer()), 1)
    assert rec["metrics"]["ce"] == pytest.approx(ce, rel=1e-3)  # bf16 forwards: same kernels, summed in float64


def test_a_llama_style_model_gets_mbe_for_every_decoder_layer_and_its_own_loss(llama_folder, tmp_path):
    assert _eval(llama_folder, tmp_path / "out", "--windowing", "both") == 0
    (rec,) = read_records(tmp_path / "out")
    layers = sorted(k for k in rec["metrics"] if k.startswith("mbe_layer_"))
    assert layers == ["mbe_layer_0", "mbe_layer_1", "mbe_layer_2"]
    model = LlamaForCausalLM.from_pretrained(llama_folder)
    ce, mbe = _own_loss_and_mbe(model, _windows(ByteTokenizer()), 16)
    assert rec["metrics"]["ce"] == pytest.approx(ce, rel=1e-5)
    assert [rec["metrics"][k] for k in layers] == pytest.approx(mbe, rel=1e-4)
    # rolling (lm-eval): every byte of every document is predicted once; bits/byte = CE/ln2 for a byte tokenizer
    assert rec["metrics"]["bpb_rolling"] == pytest.approx(rec["metrics"]["ce_rolling"] / math.log(2), rel=1e-9)
    assert rec["summary"]["corpus"]["rolling_tokens"] == rec["summary"]["corpus"]["bytes"]


def test_a_suite_run_saved_with_save_model_evaluates_to_its_recorded_validation_ce(tmp_path):
    runs = tmp_path / "runs"
    argv = ["run", "--tasks", "fineweb_lm", "--preset", "tiny", "--methods", "baseline", "--seeds", "0"]
    assert main([*argv, "--save-model", "--out", str(runs), "--quiet", "--no-report"]) == 0
    (run,) = read_records(runs)
    folder = runs / "runs" / run["run_id"] / "model"
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoTokenizer.from_pretrained(folder)("hi")["input_ids"] == [104, 105]  # the byte tokenizer, loaded back
    assert AutoModelForCausalLM.from_pretrained(folder) is not None
    c = run["config"]
    args = ["--seq-len", str(c["train"]["seq_len"]), "--max-tokens", str(c["data"]["val_tokens"])]
    args += ["--batch-size", "32", "--mbe-windows", str(c["mbe"]["eval_batches"] * c["data"]["eval_batch_size"])]
    assert main(["eval", "--model-args", f"pretrained={folder}", *args, "--out", str(runs), "--quiet"]) == 0
    evaluation = next(r for r in read_records(runs) if r.get("kind") == "evaluation")
    assert evaluation["method"] == run["run_id"]
    assert evaluation["metrics"]["ce"] == pytest.approx(run["metrics"]["val_ce"], rel=1e-6)
    assert evaluation["metrics"]["bpb"] == pytest.approx(run["metrics"]["val_bpb"], rel=1e-6)
    assert evaluation["metrics"]["mbe"] == pytest.approx(run["metrics"]["val_mbe"], rel=1e-5)
    # report and site take a folder holding both: the run in its task's table, the model in its own
    assert main(["report", str(runs), "--format", "md"]) == 0
    assert main(["site", str(runs), "-o", str(tmp_path / "site"), "--no-figures"]) == 0
    page = (tmp_path / "site" / "evaluations.html").read_text()
    assert run["run_id"] in page and "Evaluated models" in (tmp_path / "site" / "index.html").read_text()
    assert main(["paper", str(runs), "--format", "json"]) == 0  # the evaluation never enters the claims


def test_report_shows_evaluations_in_their_own_table(gpt2_folder, tmp_path, capsys):
    assert _eval(gpt2_folder, tmp_path / "out", "--measure", "ce,bpb") == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path / "out"), "--format", "md"]) == 0
    text = capsys.readouterr().out
    assert "### Evaluated models" in text and "| tiny |" in text


def test_resume_skips_an_evaluation_already_recorded(gpt2_folder, tmp_path, capsys):
    assert _eval(gpt2_folder, tmp_path / "out", "--measure", "ce") == 0
    assert _eval(gpt2_folder, tmp_path / "out", "--measure", "ce", "--resume") == 0
    assert "skipped under --resume" in capsys.readouterr().out
    assert len(read_records(tmp_path / "out")) == 1


def _planted(tmp_path: Path):
    """A tiny byte-level GPT-2 fine-tuned for many epochs on 24 member texts, and a reference of the same shape
    trained as long on other texts; 24 non-members neither saw."""
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta", "lambda", "zeta"]
    texts = [" ".join(rng.choice(words, 12)) for _ in range(72)]
    members, nonmembers, other = texts[:24], texts[24:48], texts[48:]
    tok = to_transformers(ByteTokenizer())
    folders = []
    for name, train in (("member_model", members), ("reference", other)):
        torch.manual_seed(0)
        model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, n_positions=64, vocab_size=257))
        x = torch.tensor([tok(t, add_special_tokens=False)["input_ids"][:48] for t in train])
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(200):
            loss = model(input_ids=x, labels=x).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
        folders.append(_save(model, tok, tmp_path / name))
    (tmp_path / "members.txt").write_text("\n".join(members) + "\n")
    (tmp_path / "nonmembers.txt").write_text("\n".join(nonmembers) + "\n")
    return folders


def test_memorization_of_a_planted_model_and_samples_that_recompute_the_auc(tmp_path):
    model_folder, ref_folder = _planted(tmp_path)
    mem = ["--measure", "memorization", "--members", str(tmp_path / "members.txt")]
    mem += ["--non-members", str(tmp_path / "nonmembers.txt"), "--member-tokens", "40"]
    mem += ["--reference-args", f"pretrained={ref_folder}", "--log-samples"]
    assert _eval(model_folder, tmp_path / "out", *mem) == 0
    (rec,) = read_records(tmp_path / "out")
    m = rec["metrics"]
    assert m["mi_loss_auc"] > 0.95  # the planted case: the loss attack near 1
    assert m["mi_reference_auc"] > 0.6  # calibrating by a reference trained on other texts keeps most of it
    assert m["unintended_memorization_bits"] > 0 and m["extraction_rate_p32"] > 0.5
    assert m["extraction_rate_p8"] <= m["extraction_rate_p16"] <= m["extraction_rate_p32"]  # longer prefix, easier
    # the reference saw none of the members: as a target it is at chance
    assert _eval(ref_folder, tmp_path / "ref", *mem[:-3]) == 0
    assert abs(read_records(tmp_path / "ref")[0]["metrics"]["mi_loss_auc"] - 0.5) < 0.3
    # samples: the evaluation split's scores give the record's AUC by brute force over all pairs
    rows = [json.loads(line) for line in (tmp_path / "out" / "runs" / rec["run_id"] / "samples.jsonl").open()]
    for score in ("loss", "zlib", "min_k", "min_k_plus_plus", "reference"):
        a = [r[f"score_{score}"] for r in rows if r["set"] == "member" and r["split"] == "eval"]
        b = [r[f"score_{score}"] for r in rows if r["set"] == "nonmember" and r["split"] == "eval"]
        pairs = [(x > y) + 0.5 * (x == y) for x in a for y in b]
        assert m[f"mi_{score}_auc"] == pytest.approx(sum(pairs) / len(pairs))
    # the zlib score's denominator is the compressed size of the scored 40 tokens (bytes here), not the whole text
    members = (tmp_path / "members.txt").read_text().splitlines()
    scored = sorted(zlib_length(t[:40]) for t in members)
    assert sorted(r["zlib_bytes"] for r in rows if r["set"] == "member") == scored != sorted(map(zlib_length, members))


class _Payload:
    """Unpickling this runs `open(marker, "w")`: what a malicious checkpoint does."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickled_payload_is_refused_and_never_executed(gpt2_folder, tmp_path, capsys):
    folder = tmp_path / "evil"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((gpt2_folder / name).read_bytes())
    marker = tmp_path / "pwned"
    torch.save({"transformer.wte.weight": _Payload(str(marker))}, folder / "pytorch_model.bin", pickle_protocol=2)
    assert _eval(folder, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "weights_only" in err and len(err.strip().splitlines()) == 1
    assert not marker.exists() and not (tmp_path / "out" / "runs.jsonl").exists()
    assert pickle  # the payload is a real pickle: torch.load without weights_only would run it


@pytest.mark.parametrize(
    "case",
    [
        "not_a_model",
        "no_tokenizer",
        "tokenizer_mismatch",
        "short_corpus",
        "overlap",
        "bad_measure",
        "bad_args",
        "longer_than_context",
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, gpt2_folder, llama_folder, tmp_path, capsys):
    folder, extra, model_args = gpt2_folder, [], ""
    if case == "not_a_model":
        folder = tmp_path / "empty"
        folder.mkdir()
    elif case == "no_tokenizer":
        folder = tmp_path / "bare"
        GPT2LMHeadModel.from_pretrained(gpt2_folder).save_pretrained(folder)
    elif case == "tokenizer_mismatch":  # the GPT-2 BPE (50,257 ids) for a model of 257 embeddings
        folder, model_args = llama_folder, f"tokenizer={gpt2_folder}"
    elif case == "short_corpus":
        (tmp_path / "tiny.jsonl").write_text(json.dumps({"text": "too short"}) + "\n")
        extra = ["--data", str(tmp_path / "tiny.jsonl"), "--split", "all", "--measure", "ce"]
    elif case == "overlap":
        (tmp_path / "m.txt").write_text("a shared text\nonly here\n")
        (tmp_path / "n.txt").write_text("a shared text\nelsewhere\n")
        extra = [
            "--measure",
            "memorization",
            "--members",
            str(tmp_path / "m.txt"),
            "--non-members",
            str(tmp_path / "n.txt"),
        ]
    elif case == "bad_measure":
        extra = ["--measure", "ce,perplexity"]
    elif case == "bad_args":
        model_args = "dtype=float8"
    elif case == "longer_than_context":  # the tiny GPT-2 has 64 positions
        extra = ["--seq-len", "128"]
    assert _eval(folder, tmp_path / "out", *extra, model_args=model_args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "out" / "runs.jsonl").exists()


def test_the_regression_check_shows_models_evaluated_in_both_sets_without_judging_them(gpt2_folder, tmp_path, capsys):
    for side in ("a", "b"):
        assert _eval(gpt2_folder, tmp_path / side, "--measure", "ce,bpb") == 0
    capsys.readouterr()
    argv = ["regression", "--baseline", str(tmp_path / "a"), "--candidate", str(tmp_path / "b"), "--format", "md"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "### Evaluated models in both sets" in text and "| tiny | ce |" in text and "| same |" in text
