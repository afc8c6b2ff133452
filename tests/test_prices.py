"""Prices: genai-prices' bundled snapshot for cloud models, the user's ``llm_prices``
first, energy for local models, and no price rather than a guess.

Expected costs are computed here by hand from the numbers in the snapshot itself
(``genai_prices.data``), never from prices typed into the test, so the tests hold for
whatever snapshot the installed package bundles.
"""

from __future__ import annotations

import socket
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import genai_prices
import pytest
from genai_prices.data import providers
from genai_prices.types import (
    ConditionalPrice,
    ModelInfo,
    ModelPrice,
    StartDateConstraint,
    TieredPrices,
)

from pytest_llmlab.report.prices import (
    NO_PRICE,
    OVERRIDE_SOURCE,
    Cost,
    Price,
    find_price,
    format_usd,
    generation_cost,
    has_token_price,
    load_prices,
    parse_prices_option,
    price_record,
    price_source,
)
from pytest_llmlab.results import Record

SOURCE = f"genai-prices {genai_prices.__version__}"
#: Noon UTC on 2026-11-15, a run's ``finished_at``.
FINISHED = datetime(2026, 11, 15, 12, tzinfo=UTC).timestamp()


def snapshot_model(provider_id: str, ref: str) -> ModelInfo:
    """The snapshot's entry for ``ref`` at ``provider_id``."""
    provider = next(p for p in providers if p.id == provider_id)
    return next(m for m in provider.models if m.is_match(ref))


def plain(model: ModelInfo) -> ModelPrice:
    assert isinstance(model.prices, ModelPrice), f"{model.id} has dated prices now"
    return model.prices


def per_million(tokens: int, price: Decimal | TieredPrices | None) -> float:
    assert isinstance(price, Decimal)
    return tokens * float(price) / 1e6


def cloud(spec: str, prompt: int, completion: int | None, **extra: Any) -> dict[str, Any]:
    return {
        "spec": spec,
        "model": spec,
        "provider": spec.partition(":")[0],
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cached_prompt_tokens": None,
        "finished_at": FINISHED,
        "energy": {"wh": 1.0, "cost": 9.0},
        **extra,
    }


@pytest.mark.parametrize(
    ("spec", "provider_id"),
    [
        ("openai:gpt-4o-mini", "openai"),
        ("openai:gpt-4o-mini-2024-07-18", "openai"),  # a dated snapshot of it
        ("anthropic:claude-3-haiku-20240307", "anthropic"),
        ("gemini:gemini-2.0-flash", "google"),
    ],
)
def test_cloud_models_cost_their_tokens_at_the_snapshot_prices(spec: str, provider_id: str) -> None:
    price = plain(snapshot_model(provider_id, spec.partition(":")[2]))
    expected = per_million(1200, price.input_mtok) + per_million(345, price.output_mtok)
    cost = generation_cost(cloud(spec, 1200, 345), {}, 0.3)
    assert cost.amount == pytest.approx(expected, rel=1e-12)
    assert (cost.source, cost.price_date) == (SOURCE, "2026-11-15")


def test_cached_prompt_tokens_cost_the_cache_read_rate() -> None:
    price = plain(snapshot_model("openai", "gpt-4o-mini"))
    assert price.cache_read_mtok is not None and price.cache_read_mtok != price.input_mtok
    expected = (
        per_million(1000 - 600, price.input_mtok)
        + per_million(600, price.cache_read_mtok)
        + per_million(50, price.output_mtok)
    )
    record = cloud("openai:gpt-4o-mini", 1000, 50, cached_prompt_tokens=600)
    assert generation_cost(record, {}, None).amount == pytest.approx(expected, rel=1e-12)


def test_prices_are_those_of_the_day_the_generation_finished() -> None:
    """o3's price changed on a date the snapshot records: a generation the day before
    costs the old price, one on that day the new one."""
    model = snapshot_model("openai", "o3")
    assert isinstance(model.prices, list)
    changes = [
        (index, c)
        for index, c in enumerate(model.prices)
        if isinstance(c, ConditionalPrice) and isinstance(c.constraint, StartDateConstraint)
    ]
    index, change = changes[-1]
    assert isinstance(change.constraint, StartDateConstraint)
    day = change.constraint.start_date
    old, new = model.prices[index - 1].prices, change.prices
    assert old.input_mtok != new.input_mtok

    def at(when: date) -> Cost:
        noon = datetime(when.year, when.month, when.day, 12, tzinfo=UTC).timestamp()
        return generation_cost(cloud("openai:o3", 2000, 300, finished_at=noon), {}, None)

    before, after = at(day - timedelta(days=1)), at(day)
    assert before.amount == pytest.approx(
        per_million(2000, old.input_mtok) + per_million(300, old.output_mtok), rel=1e-12
    )
    assert after.amount == pytest.approx(
        per_million(2000, new.input_mtok) + per_million(300, new.output_mtok), rel=1e-12
    )
    assert before.price_date == f"{day - timedelta(days=1):%Y-%m-%d}"
    assert after.price_date == f"{day:%Y-%m-%d}"


def test_long_prompts_cost_the_context_tier_rate() -> None:
    price = plain(snapshot_model("google", "gemini-2.5-pro"))
    inp, out = price.input_mtok, price.output_mtok
    assert isinstance(inp, TieredPrices) and isinstance(out, TieredPrices)
    tier = inp.tiers[0].start
    (out_tier,) = [t for t in out.tiers if t.start == tier]
    short = generation_cost(cloud("gemini:gemini-2.5-pro", tier - 1000, 100), {}, None)
    long = generation_cost(cloud("gemini:gemini-2.5-pro", tier + 1000, 100), {}, None)
    assert short.amount == pytest.approx(
        per_million(tier - 1000, inp.base) + per_million(100, out.base), rel=1e-12
    )
    assert long.amount == pytest.approx(
        per_million(tier + 1000, inp.tiers[0].price) + per_million(100, out_tier.price),
        rel=1e-12,
    )


def test_the_users_prices_win() -> None:
    mine = load_prices(parse_prices_option("gpt-4o-mini=1/2"))
    record = cloud("openai:gpt-4o-mini-2024-07-18", 1000, 500)
    cost = generation_cost(record, mine, None)
    assert cost.amount == pytest.approx((1000 * 1 + 500 * 2) / 1e6)
    assert (cost.source, cost.price_date) == (OVERRIDE_SOURCE, None)
    # A local model with a price of the user's costs its tokens, not its energy.
    local = {**cloud("vllm:mine", 1000, 500), "energy": {"wh": 1.0}}
    assert generation_cost(local, load_prices({"vllm:mine": (3, 4)}), 0.3).source == (
        OVERRIDE_SOURCE
    )


def test_unknown_cloud_models_have_no_price() -> None:
    for spec in ("openai:not-a-model-anyone-sells", "anthropic:claude-from-the-future-9"):
        assert generation_cost(cloud(spec, 10, 10), {}, 0.3) == Cost(None, NO_PRICE)
        assert not has_token_price(spec, {})
    # tokens unknown (a test that died first): no price either, not the energy cost
    assert generation_cost(cloud("openai:gpt-4o-mini", 10, None), {}, 0.3) == Cost(None, NO_PRICE)


def test_local_models_cost_their_energy() -> None:
    """A name genai-prices knows does not make a self-hosted model a cloud's."""
    local = {"spec": "vllm:gpt-4o-mini", "model": "vllm:gpt-4o-mini", "prompt_tokens": 40,
             "completion_tokens": 8, "energy": {"wh": 0.5, "cost": 0.002}}  # fmt: skip
    energy = generation_cost(local, {}, 0.3)
    assert energy.amount == pytest.approx(0.00015) and energy.source == "energy"
    assert generation_cost(local, {}, None) == Cost(0.002, "recorded")
    assert generation_cost({**local, "energy": None}, {}, 0.3) == Cost(None, "none")
    assert not has_token_price("vllm:gpt-4o-mini", {})
    assert not has_token_price("local:smollm2-135m", {})
    assert has_token_price("openai:gpt-4o-mini", {})
    assert has_token_price("llamacpp:x", {}, display="mine") is False
    assert has_token_price("llamacpp:x", {"mine": Price(1, 1)}, display="mine")


def test_price_record_fills_the_cost_fields() -> None:
    priced = cast(Record, cloud("openai:gpt-4o-mini", 100, 10))
    price_record(priced, {})
    expected = generation_cost(priced, {}, None)
    assert (priced["cost"], priced["cost_source"], priced["price_date"]) == tuple(expected)
    assert priced["cost"] and priced["cost_source"] == SOURCE
    unknown = cast(Record, cloud("openai:nobody-sells-this", 100, 10))
    price_record(unknown, {})
    assert (unknown["cost"], unknown["cost_source"], unknown["price_date"]) == (
        None, NO_PRICE, None,
    )  # fmt: skip
    local = cast(Record, {**cloud("local:smollm2-135m", 100, 10), "cost": 1.0})
    price_record(local, {})
    assert (local["cost"], local["cost_source"], local["price_date"]) == (None, None, None)


def test_pricing_never_goes_to_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pricing opened a socket")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    record = cloud("anthropic:claude-3-5-haiku-latest", 10, 10)
    assert generation_cost(record, {}, None).source == SOURCE
    assert price_source() == SOURCE  # the bundled snapshot, not one fetched since


def test_find_price_by_spec_name_and_snapshot() -> None:
    table = load_prices({"openai:gpt-4o": (1.0, 1.0), "gpt-4o-mini": (2, 3), "claude-x": (4, 5)})
    assert find_price(table, "openai:gpt-4o") == ("openai:gpt-4o", Price(1, 1))
    assert find_price(table, "lmstudio:gpt-4o-mini") == ("gpt-4o-mini", Price(2, 3))
    assert find_price(table, "openai:gpt-4o-mini-2024-07-18")[0] == "gpt-4o-mini"  # type: ignore[index]
    assert find_price(table, "anthropic:claude-x-latest")[0] == "claude-x"  # type: ignore[index]
    assert find_price(table, "anthropic:claude-x-20250514")[0] == "claude-x"  # type: ignore[index]
    assert find_price(table, "openai:gpt-4o-mini-audio-preview") is None  # not a snapshot
    assert find_price(table, None, "local:smollm2-135m") is None
    assert load_prices(None) == {}


def test_parse_prices_option() -> None:
    extra = parse_prices_option("gpt-4o=3/12, openai:mine=1/4\nfree=0/0")
    assert extra == {"gpt-4o": Price(3, 12), "openai:mine": Price(1, 4), "free": Price(0, 0)}
    assert parse_prices_option("") == {}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpt-4o", "'gpt-4o' is not MODEL=INPUT/OUTPUT"),
        ("gpt-4o=3", "'gpt-4o=3' is not MODEL=INPUT/OUTPUT"),
        ("=1/2", "'=1/2' is not MODEL=INPUT/OUTPUT"),
        ("m=a/2", "price 'm=a/2': 'a' is not a number"),
        ("m=-1/2", "price 'm=-1/2': -1.0 is not a finite number >= 0"),
        ("ok=1/2,m=1/inf", "price 'm=1/inf': inf is not a finite number >= 0"),
    ],
)
def test_parse_prices_option_bad(text: str, expected: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_prices_option(text)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (5, "$5.00"),
        (5.0013, "$5.0013"),
        (1234.5, "$1,234.50"),
        (0.5, "$0.50"),
        (0.000215, "$0.000215"),
        (2.85e-6, "$0.00000285"),
        (0.0, "$0.00"),
    ],
)
def test_format_usd(amount: float, text: str) -> None:
    assert format_usd(amount) == text
