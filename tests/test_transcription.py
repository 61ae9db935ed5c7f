"""The transcription task: CTC decoders on hand-made log-probabilities (known answers, and
brute force over every labelling), target normalisation and encoding, WER and CER against
hand counts, the time-stride rule, and a tiny end-to-end run on real FSDD clips with
`mmcli predict --audio`."""

from __future__ import annotations

import csv
import itertools
import json
import math

import pytest
import torch

from conftest import SHARED_DATA
from mmcli.config import Config
from mmcli.heads.transcription import (BLANK, CTCHead, Transcription, beam_decode, greedy_decode, normalise,
                                       prefix_beam_search, sequence_logp, with_time_stride)

FSDD = SHARED_DATA / "fsdd" / "recordings"
DIGITS = "zero one two three four five six seven eight nine".split()


def _logp(probs: list[list[float]]) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log()


def _paths_logp(logp: torch.Tensor, labels: list[int]) -> float:
    """log P(labels) by summing every frame-wise path that collapses to them."""
    t, v = logp.shape
    total = 0.0
    for path in itertools.product(range(v), repeat=t):
        collapsed = [c for i, c in enumerate(path) if c != BLANK and (i == 0 or c != path[i - 1])]
        if collapsed == labels:
            total += math.exp(sum(float(logp[i, c]) for i, c in enumerate(path)))
    return math.log(total) if total > 0 else -math.inf


def test_greedy_collapses_repeats_and_drops_blanks():
    # argmax per frame: a a _ a b b _ -> "aab" (ids 1 1 2); a blank between the a's keeps both
    probs = [[0.1, 0.8, 0.1], [0.2, 0.7, 0.1], [0.9, 0.05, 0.05], [0.1, 0.6, 0.3], [0.1, 0.2, 0.7], [0.2, 0.1, 0.7],
             [0.8, 0.1, 0.1]]
    assert greedy_decode(_logp(probs)) == [1, 1, 2]
    assert greedy_decode(_logp([[0.9, 0.1]] * 4)) == []


def test_beam_finds_the_labelling_greedy_misses():
    # two frames, P(blank) = 0.6 each: greedy says "" (0.36); "a" has 0.16 + 0.24 + 0.24 = 0.64
    logp = _logp([[0.6, 0.4], [0.6, 0.4]])
    assert greedy_decode(logp) == []
    assert beam_decode(logp, 2) == [1]
    assert float(sequence_logp(logp, [[1]])[0]) == pytest.approx(math.log(0.64))
    assert float(sequence_logp(logp, [[]])[0]) == pytest.approx(math.log(0.36))
    assert beam_decode(logp, 1) == []  # a beam of one is greedy decoding


def test_sequence_logp_equals_the_sum_over_paths():
    torch.manual_seed(0)
    for t, v in ((3, 3), (4, 3), (5, 2)):
        logp = torch.log_softmax(torch.randn(t, v, dtype=torch.float64), dim=-1)
        for labels in ([1], [1, 1], [2, 1], [1, 2, 1][: t], []):
            if max(labels, default=0) < v:
                assert float(sequence_logp(logp, [labels])[0]) == pytest.approx(_paths_logp(logp, labels), abs=1e-6)


def test_wide_beam_is_exact_and_any_beam_is_at_least_as_probable_as_greedy():
    gen = torch.Generator().manual_seed(1)
    strictly_better = 0
    for trial in range(60):
        t, v = 2 + trial % 4, 2 + trial % 3
        logp = torch.log_softmax(torch.randn(t, v, generator=gen, dtype=torch.float64) * 1.5, dim=-1)
        labellings = [list(s) for n in range(t + 1) for s in itertools.product(range(1, v), repeat=n)]
        exact = sequence_logp(logp, labellings)
        assert list(prefix_beam_search(logp, 10_000)[0]) == labellings[int(exact.argmax())]
        greedy, beam = greedy_decode(logp), beam_decode(logp, 3)
        g, b = sequence_logp(logp, [greedy, beam]).tolist()
        assert b >= g - 1e-9 and len(beam) <= t
        strictly_better += b > g + 1e-9
    assert strictly_better > 0  # the test set has cases where the beam matters


def test_normalise_names_and_encoding_keep_unknown_characters_for_scoring():
    assert normalise("Hot-dogs,  2 of THEM!") == "hot dogs 2 of them"
    assert normalise("  Don\u2019t stop. ") == "don't stop"
    task = Transcription(Config())
    names = task.names(["ab a", "Ba!"])
    assert names == ["<blank>", " ", "a", "b"]
    targets = task.encode(["ab", "a c c", "b"], names)
    assert targets.tolist() == [[2, 3, 0, 0, 0], [2, 1, 4, 1, 4], [3, 0, 0, 0, 0]]  # "c": one id past the vocabulary
    refs = task.decode(targets, names)
    assert refs[0] == "ab" and refs[2] == "b" and refs[1][:2] == "a " and refs[1][2] not in names and len(refs[1]) == 5
    assert task.check(["ok", "?!", ""], ["train", "test", "val"], names) == [
        (1, "the transcript (test) has no letter or digit"), (2, "the transcript (val) has no letter or digit")]


def test_loss_counts_frames_from_the_mask_and_leaves_out_unknown_characters():
    from types import SimpleNamespace

    torch.manual_seed(0)
    head = CTCHead("speech", 8, vocab=4, hidden=6, kind="lstm").train()
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    feats = {"speech": SimpleNamespace(tokens=torch.randn(2, 7, 8), token_mask=mask)}
    logp = head(feats, {}, {})
    assert torch.all(logp[1, 4:, BLANK] == 0) and torch.all(torch.isinf(logp[1, 4:, 1:]))  # padding: certain blanks
    task = Transcription(Config())
    labels = torch.tensor([[2, 3, 2], [1, 9, 0]])  # 9: a character outside the vocabulary, left out of the loss
    got = task.loss(logp, {"label": labels})
    each = torch.nn.functional.ctc_loss(logp.detach().transpose(0, 1), torch.tensor([2, 3, 2, 1]), torch.tensor([7, 4]),
                                        torch.tensor([3, 1]), blank=0, reduction="none") / torch.tensor([3.0, 1.0])
    assert float(got.detach()) == pytest.approx(float(each.mean()), rel=1e-6)  # torch's reduction="mean"
    got.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters())
    head.eval()
    out = head(feats, {}, {})  # predict: no target, no loss
    assert out.shape == (2, 401) and torch.isnan(out[:, 0]).all()
    assert int((out[1, 1:] > 0).sum()) <= 4  # never more characters than frames
    scored = head(feats, {}, {"label": labels})
    logp = head.log_probs(feats).detach()  # without dropout
    each = torch.nn.functional.ctc_loss(logp.transpose(0, 1), torch.tensor([2, 3, 2, 1]), torch.tensor([7, 4]),
                                        torch.tensor([3, 1]), blank=0, reduction="none") / torch.tensor([3.0, 1.0])
    assert torch.allclose(scored[:, 0], each, atol=1e-5)  # evaluation: each clip's loss beside its transcript
    assert torch.equal(scored[:, 1:], out[:, 1:])


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_a_clip_reads_the_same_alone_and_padded_in_a_batch(kind):
    from types import SimpleNamespace

    torch.manual_seed(0)
    head = CTCHead("speech", 5, vocab=6, hidden=4, kind=kind, layers=2).eval()
    tokens = torch.randn(2, 9, 5)
    padded = {"speech": SimpleNamespace(tokens=tokens, token_mask=torch.tensor([[True] * 9, [True] * 6 + [False] * 3]))}
    alone = {"speech": SimpleNamespace(tokens=tokens[1:, :6], token_mask=torch.ones(1, 6, dtype=torch.bool))}
    both = head.log_probs(padded)
    assert torch.allclose(both[1, :6], head.log_probs(alone)[0], atol=1e-6)
    tokens[1, 6:] = 100.0  # what the padding holds changes nothing, in either direction
    assert torch.allclose(head.log_probs(padded), both, atol=1e-6)


def _outputs(task: Transcription, texts: list[str], names: list[str], loss: float = 0.0) -> torch.Tensor:
    """What the head gives outside training: a loss column, then the label ids."""
    ids = task.encode(texts, names).float()
    return torch.cat([torch.full((len(texts), 1), loss), ids], dim=1)


def test_wer_and_cer_equal_hand_counts():
    task = Transcription(Config(), {"constant_transcript": "a"})
    refs, hyps = ["the cat sat", "a dog"], ["the cat sat down", "a fog"]
    names = task.names(refs + hyps)
    scores = task.evaluate(_outputs(task, hyps, names, loss=0.5), task.encode(refs, names), names)
    # words: one insertion ("down") and one substitution (fog) in 5 words
    assert scores["wer"] == pytest.approx(2 / 5) and scores["word_accuracy"] == pytest.approx(3 / 5)
    # characters: " down" inserted (5), d -> f (1), in 11 + 5 characters
    assert scores["cer"] == pytest.approx(6 / 16)
    # constant "a": 3 errors in "the cat sat", "a dog" one deletion; characters: 10 + 4 edits of 16
    assert scores["baseline_wer"] == pytest.approx(4 / 5) and scores["baseline_cer"] == pytest.approx(14 / 16)
    assert scores["samples"][1] == {"generated": "a fog", "reference": "a dog"} and scores["n_examples"] == 2
    assert scores["loss"] == pytest.approx(0.5)
    noisy = task.evaluate(_outputs(task, ["a b c d e f"], names), task.encode(["a dog"], names), names)
    assert noisy["wer"] == pytest.approx(5 / 2) and noisy["word_accuracy"] == 0.0  # a substitution, 4 insertions


def test_the_constant_baseline_is_the_best_frequent_transcript():
    task = Transcription(Config())
    state = task.fit_state(["one", "one", "two", "three", "one two"], [])
    assert state == {"constant_transcript": "one"}


def test_time_stride_rule_and_kind_options_kept():
    config = Config()
    config.model.encoder_options = {"audio": {"spec_augment": True}}
    got = with_time_stride(config.copy(), "speech", "audio")
    assert got.model.encoder_options["speech"] == {"spec_augment": True, "time_stride": 1}  # 62.5 frames a second
    config.data.hop_length = 160  # 100 frames a second: 2 frames a token still gives 50 tokens a second
    assert with_time_stride(config.copy(), "speech", "audio").model.encoder_options["speech"]["time_stride"] == 2
    config.model.encoder_options = {"speech": {"time_stride": 4}}
    assert with_time_stride(config.copy(), "speech", "audio").model.encoder_options["speech"] == {"time_stride": 4}


def _fsdd_manifest(folder) -> tuple:
    """660 FSDD clips: takes 5-14 of every speaker and digit train, take 0 is the test split."""
    rows = []
    for path in sorted(FSDD.glob("*.wav")):
        digit, _, take = path.stem.split("_")
        if int(take) == 0 or 5 <= int(take) <= 14:
            rows.append({"id": path.stem, "audio": str(path.resolve()), "transcript": DIGITS[int(digit)],
                         "split": "test" if int(take) == 0 else "train"})
    manifest = folder / "fsdd.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest, rows


@pytest.mark.skipif(not FSDD.is_dir(), reason="../shared/data/fsdd/recordings is absent")
def test_fsdd_transcription_beats_the_constant_transcript_and_predicts(cli, tmp_path):
    manifest, rows = _fsdd_manifest(tmp_path)
    run = tmp_path / "run"
    # FSDD speaks about 9 characters a second: 2 frames a token (31 a second) trains in half the time
    result = cli("train", manifest, "--task", "transcription", "--modalities", "audio,transcript", "--epochs", "12",
                 "--set", "model.encoder_options.audio.time_stride=2", "--out", run)
    assert result.exit_code == 0, result.output
    scores = json.loads((run / "eval-test.json").read_text())
    assert scores["n_examples"] == 60 and len(scores["samples"]) == 5
    # the constant transcript's CER is 0.75; margin 0.25 (measured: CER 0.23-0.25 over seeds 0 and 1)
    assert scores["cer"] <= scores["baseline_cer"] - 0.25, scores
    assert scores["baseline_cer"] == pytest.approx(0.75) and scores["wer"] < scores["baseline_wer"] == pytest.approx(0.9)
    assert 0 <= scores["word_accuracy"] == pytest.approx(max(0.0, 1 - scores["wer"])) and scores["loss"] > 0
    config = (run / "config.yaml").read_text()
    assert "time_stride: 2" in config and "task: transcription" in config
    assert "batch_size: 16" in config  # the task's batch size where the config leaves the default
    vocab = json.loads((run / "labels.json").read_text())
    assert vocab[0] == "<blank>" and set("".join(DIGITS)) <= set(vocab)
    clip = next(r["audio"] for r in rows if r["split"] == "test")
    for extra in ([], ["--beam", "4"]):
        out = cli("predict", run, "--audio", clip, *extra)
        assert out.exit_code == 0, out.output
        answer = json.loads(out.stdout.splitlines()[0])
        assert set(answer) >= {"transcript"} and set(answer["transcript"]) <= set(vocab[1:]), answer
    table = cli("predict", run, "--split", "test", "--format", "csv")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0] == "id,transcript,modalities_used" and len(lines) == 61
    assert [line.split(",")[1] for line in lines[1:6]] == [s["generated"] for s in scores["samples"]]
    _served_transcripts_equal_predicts(run, clip, answer)
    sweep = cli("evaluate", run, "--robustness", "--json")  # scored by word accuracy, where higher is better
    assert sweep.exit_code == 0, sweep.output
    curves = json.loads(sweep.stdout.splitlines()[-1])
    assert curves["metric"] == "word_accuracy" and curves["clean"] == pytest.approx(scores["word_accuracy"])
    assert curves["curves"]["audio"]["white_noise"][-1] < curves["clean"]
    right = sum(line.split(",")[1] == DIGITS[int(line.split(",")[0][0])] for line in lines[1:])
    assert right / 60 >= 1 - scores["wer"] - 1e-9 and right > 0  # a wrong clip costs at least one word


def _served_transcripts_equal_predicts(run, clip: str, beam4: dict) -> None:
    """`mmcli serve`: POST /transcribe (with ?beam=4) answers as `predict --beam 4`; /caption is not this run's."""
    pytest.importorskip("fastapi")
    from mmcli.serve import Settings
    from test_serve import call, served_in_a_thread

    with served_in_a_thread(Settings(str(run))) as base:
        status, info = call(base, "/info")
        assert status == 200 and "POST /transcribe" in info["routes"] and "POST /caption" not in info["routes"]
        status, got = call(base, "/transcribe?beam=4", {"audio": clip})
        assert status == 200 and got["transcript"] == beam4["transcript"], got
        status, got = call(base, "/caption", {"audio": clip})
        assert status == 404 and "/caption is for captioning runs" in got["error"], got
