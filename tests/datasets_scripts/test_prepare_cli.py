"""``demixers prepare`` end to end through argparse."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from datasets import load_from_disk

from demixers.datasets_scripts.cli import configure_parser, run
from demixers.datasets_scripts.corpora import CORPORA
from tests.datasets_scripts import corpus_factory as factory


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="demixers prepare")
    configure_parser(parser)
    return parser.parse_args(argv)


def test_every_corpus_is_a_subcommand(capsys) -> None:
    assert {"librimix", "wham", "whamr", "wsj0-2mix", "wsj0-3mix", "musdb18hq", "musdb18", "mir1k"} <= set(
        CORPORA
    )
    for name in CORPORA:
        with pytest.raises(SystemExit) as exit_info:
            _parse([name, "--help"])
        assert exit_info.value.code == 0
        assert "--output" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        _parse(["wham", "root"])  # --output is required
    capsys.readouterr()


def test_cli_prepares_librimix_with_options(odd_dir: Path, capsys) -> None:
    root = factory.make_librimix(odd_dir / "corpus", splits=("dev", "test"), items_per_split=2)
    output = odd_dir / "prepared dataset"
    args = _parse(
        ["librimix", str(root), "--output", str(output), "--mix-type", "mix_both", "--shard-size", "1"]
    )
    assert args.mix_type == "mix_both" and args.shard_size == 1
    assert run(args) == 0
    assert "prepared librimix" in capsys.readouterr().out
    dataset = load_from_disk(str(output))
    assert sorted(dataset) == ["test", "validation"]
    assert dataset["test"].column_names[:5] == ["id", "mixture", "s1", "s2", "noise"]


def test_cli_skip_invalid_reports_what_was_left_out(tmp_path: Path) -> None:
    root = factory.make_mir1k(tmp_path / "mir")
    bad = root / "MIR-1K" / "Wavfile" / "bobon_3_01.wav"
    factory.write(bad, factory.speech(__import__("numpy").random.default_rng(0), 100), 16000)  # mono
    output = tmp_path / "out"
    with pytest.raises(ValueError, match=r"test/bobon_3_01: stereo: 1 channel\(s\), expected 2"):
        run(_parse(["mir1k", str(root), "-o", str(output)]))
    with pytest.warns(UserWarning, match="bobon_3_01"):
        assert run(_parse(["mir1k", str(root), "-o", str(output), "--skip-invalid"])) == 0
    assert "bobon_3_01" not in load_from_disk(str(output))["test"]["id"]


def test_demixers_main_reports_user_errors_in_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    from demixers.cli import main

    monkeypatch.setattr("demixers.datasets_scripts.corpora.ffmpeg_executable", lambda: None)
    (tmp_path / "musdb" / "train").mkdir(parents=True)
    assert main(["prepare", "musdb18", str(tmp_path / "musdb"), "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "demixers prepare: error: musdb18: decoding .stem.mp4 files needs ffmpeg" in error
    root = factory.make_wsj0mix(tmp_path / "wsj", items_per_split=1)
    assert main(["prepare", "wsj0-2mix", str(root), "--output", str(tmp_path / "wsj out")]) == 0
    assert len(load_from_disk(str(tmp_path / "wsj out"))["train"]) == 1
