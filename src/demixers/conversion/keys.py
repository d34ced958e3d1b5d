"""Renaming a checkpoint's keys to ours, with nothing silently dropped and nothing left out.

A mapping is a list of ``(pattern, replacement)`` rules tried in order; a pattern must match the
whole key (``re.fullmatch``) and the replacement may use its groups (``\\1``). `map_keys` applies
them and returns the keys no rule consumed; `check_state_dict` compares the result with the
target model's keys and shapes; `load_into_model` does both checks and loads strictly.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch

Rule = tuple[str, str]


def compile_rules(rules: Sequence[Rule]) -> list[tuple[re.Pattern[str], str]]:
    return [(re.compile(pattern), replacement) for pattern, replacement in rules]


def map_key(key: str, rules: Sequence[Rule] | Sequence[tuple[re.Pattern[str], str]]) -> str | None:
    """Our name for ``key`` under the first rule whose pattern matches it whole (None: no rule does)."""
    for pattern, replacement in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return match.expand(replacement)
    return None


def map_keys(
    state_dict: Mapping[str, torch.Tensor],
    rules: Sequence[Rule],
    *,
    drop: Iterable[str] = (),
    leaf_renames: Mapping[str, str] | None = None,
    transform: Callable[[str, str, torch.Tensor], torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Rename every key of ``state_dict``; returns ``(renamed, unconsumed source keys)``.

    ``drop`` lists patterns of source keys deliberately left out (they are neither renamed nor
    reported). ``leaf_renames`` renames the last dotted component of a produced name
    (``gamma -> weight``). ``transform(source_key, our_key, tensor)`` may reshape a tensor.
    Two source keys producing the same name is a ValueError.
    """
    compiled = compile_rules(rules)
    dropped = [re.compile(pattern) for pattern in drop]
    renamed: dict[str, torch.Tensor] = {}
    origin: dict[str, str] = {}
    unconsumed: list[str] = []
    for key, value in state_dict.items():
        if any(pattern.fullmatch(key) for pattern in dropped):
            continue
        new = map_key(key, compiled)
        if new is None:
            unconsumed.append(key)
            continue
        if leaf_renames:
            head, _, leaf = new.rpartition(".")
            new = f"{head}.{leaf_renames.get(leaf, leaf)}" if head else leaf_renames.get(leaf, leaf)
        if new in renamed:
            raise ValueError(f"the checkpoint keys {origin[new]!r} and {key!r} both map to {new!r}")
        origin[new] = key
        renamed[new] = transform(key, new, value) if transform is not None else value
    return renamed, unconsumed


def _summary(title: str, keys: Sequence[str]) -> str:
    return f"{title} ({len(keys)}): " + ", ".join(keys[:20]) + (" ..." if len(keys) > 20 else "")


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Tensor],
    description: str,
    *,
    unconsumed: Sequence[str] = (),
    separator: str = "; ",
) -> None:
    """Raise one ValueError listing unconsumed source keys, missing / unexpected keys and shape mismatches."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = list(unconsumed) + sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(expected[key].shape)}"
        for key, value in state_dict.items()
        if key in expected and value.shape != expected[key].shape
    ]
    problems = [
        _summary(title, keys)
        for title, keys in (
            ("missing keys", missing),
            ("unexpected keys", unexpected),
            ("shape mismatches", mismatched),
        )
        if keys
    ]
    if problems:
        raise ValueError(f"{description}{separator.join(problems)}")


def load_into_model(model: Any, state_dict: Mapping[str, torch.Tensor], description: str) -> None:
    """Strict load that lists missing / unexpected / mismatched keys in one ValueError; eval mode after."""
    expected = model.state_dict()
    check_state_dict(
        state_dict,
        expected,
        f"{description} does not match the architecture {model.config.to_diff_dict()}:\n  ",
        separator="\n  ",
    )
    model.load_state_dict(
        {key: value.to(expected[key].dtype) for key, value in state_dict.items()}, strict=True
    )
    model.eval()


__all__ = ["check_state_dict", "compile_rules", "load_into_model", "map_key", "map_keys"]
