"""Text encoder and tokenizer beyond the golden: tokenizer cleaning, round trips, config inference."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from vc2_core.config import TextEncoderConfig
from vc2_core.text import END, START, TextEncoder, Tokenizer

TINY = TextEncoderConfig(width=32, layers=3, heads=4, embed_dim=16)


@pytest.fixture(scope="module")
def tokenizer():
    return Tokenizer()


def test_empty_prompt_is_start_end_then_zeros(tokenizer):
    ids = tokenizer([""])
    assert ids.shape == (1, 77) and ids.dtype == torch.long
    assert ids[0, :2].tolist() == [START, END] and not ids[0, 2:].any()


def test_cleaning_like_open_clip(tokenizer):
    same = tokenizer(["A “Quoted”   DOG&amp;cat\n", "a \"quoted\" dog&cat"])
    assert torch.equal(same[0], same[1])  # curly quotes, HTML entities, whitespace and case are normalised


def test_long_prompt_is_cut_with_end_token_and_a_warning(tokenizer):
    with pytest.warns(UserWarning, match="cut to 77"):
        ids = tokenizer(["word " * 100])
    assert ids[0, -1] == END and (ids[0] != 0).all()


def test_single_string_is_refused(tokenizer):
    with pytest.raises(TypeError, match="list of prompts"):
        tokenizer("a dog")


def _random_encoder(config=TINY, seed=0) -> TextEncoder:
    torch.manual_seed(seed)
    return TextEncoder(config).eval()


def test_official_state_dict_round_trip_is_bit_exact():
    source = _random_encoder()
    state = source.official_state_dict()
    assert list(state) == source.official_keys()
    assert state["model.transformer.resblocks.0.attn.in_proj_weight"].shape == (96, 32)
    target = _random_encoder(seed=1)
    target.load_official_state_dict(state)
    again = target.official_state_dict()
    assert all(torch.equal(state[k], again[k]) for k in state)
    tokens = Tokenizer()(["a corgi on the beach", ""])
    with torch.no_grad():
        torch.testing.assert_close(source(tokens), target(tokens), rtol=0, atol=0)


def test_penultimate_is_final_norm_of_second_to_last_block():
    encoder = _random_encoder()
    tokens = Tokenizer()(["a cat"])
    with torch.no_grad():
        hidden = encoder.hidden_states(tokens)
        penultimate = encoder(tokens)
        last = TextEncoder(dataclasses.replace(TINY, layer="last")).eval()
        last.load_state_dict(encoder.state_dict())
        torch.testing.assert_close(penultimate, encoder.tower.final_layer_norm(hidden[-2]))
        torch.testing.assert_close(last(tokens), encoder.tower.final_layer_norm(hidden[-1]))
    assert len(hidden) == TINY.layers
    assert (last(tokens) - penultimate).abs().max() > 1e-3


def test_config_inference_and_bad_state_dicts():
    state = _random_encoder().official_state_dict()
    inferred = TextEncoder.config_from_official_state_dict(state, heads=4)
    assert inferred == TINY
    assert TextEncoder.config_from_official_state_dict(state).heads == 1  # width 32 // 64, at least 1
    broken = dict(state)
    del broken["model.ln_final.bias"]
    broken["model.visual.proj"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"missing \['model.ln_final.bias'\].*unexpected \['model.visual.proj'\]"):
        _random_encoder().load_official_state_dict(broken)
    wrong = dict(state)
    wrong["model.positional_embedding"] = torch.zeros(76, 32)
    with pytest.raises(ValueError, match="wrong shape"):
        _random_encoder().load_official_state_dict(wrong)
