"""The sans-IO core under Hypothesis, briefly (bench/fuzz.py runs a million inputs)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from tests.fuzz import (
    chunk_sizes,
    configs,
    decoder_bodies,
    decoder_target,
    grammar_target,
    session_target,
    streams,
    strictness,
    texts,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(config=configs, stream=streams)
def test_session_survives_any_input(config, stream):
    session_target(config, stream)


@FUZZ
@given(text=texts, strict=strictness)
def test_grammar_raises_only_grammar_errors(text, strict):
    grammar_target(text, strict)


@FUZZ
@given(body=decoder_bodies, sizes=chunk_sizes)
def test_decoder_never_ends_early_once_restuffed(body, sizes):
    decoder_target(body, sizes)
