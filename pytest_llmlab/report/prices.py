"""What a generation cost: cloud models by their token prices, local ones by energy.

`load_prices` reads the table shipped in ``prices.toml`` (USD per million input and
output tokens, as published by the providers on `PRICES_PUBLISHED`) and merges a
user's own on top: the ini key ``llm_prices = "gpt-4o=2.5/10, openai:mine=1/4"``,
parsed by `parse_prices_option`. `generation_cost` then prices one record:

* a model with a price (by its spec ``openai:gpt-4o``, its display name, or its bare
  name ``gpt-4o``; dated snapshots like ``gpt-4o-2024-08-06`` use the base price):
  ``prompt_tokens x input + completion_tokens x output``, per million; source ``"tokens"``;
* otherwise, with a price per kWh: the measured or estimated Wh x price; ``"energy"``;
* otherwise the cost the run recorded (``energy.cost``, from ``--llm-kwh-price``);
  ``"recorded"``;
* otherwise no cost: ``(None, "none")``.

Currency is whatever the prices are in: the shipped table is USD; the kWh price is the
user's own currency, so do not mix the two in one report without converting.
"""

from __future__ import annotations

import functools
import re
import tomllib
from collections.abc import Mapping
from importlib import resources
from typing import Any, Literal

from pytest_llmlab.option_values import Price, parse_prices_option, price_number
from pytest_llmlab.report.summary import energy_of
from pytest_llmlab.stats import finite_or_none

__all__ = [
    "PRICES_PUBLISHED",
    "CostSource",
    "Price",
    "builtin_prices",
    "find_price",
    "generation_cost",
    "load_prices",
    "parse_prices_option",
]

#: Where a cost came from (see the module docstring).
CostSource = Literal["tokens", "energy", "recorded", "none"]

#: A dated snapshot or moving alias of a base model name.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


def _read_table(text: str) -> tuple[str, dict[str, Price]]:
    """The publication date and ``{model: Price}`` of a prices TOML document."""
    data = tomllib.loads(text)
    published = str(data.get("published", "unknown date"))
    table: dict[str, Price] = {}
    for provider, models in data.items():
        if not isinstance(models, dict):
            continue  # published, sources
        for model, entry in models.items():
            where = f"prices.toml [{provider}] {model!r}"
            if not isinstance(entry, dict) or set(entry) != {"input", "output"}:
                raise ValueError(f"{where}: expected {{ input = N, output = N }}")
            if model in table:
                raise ValueError(f"{where}: listed twice")
            table[model] = Price(
                price_number(where, entry["input"]), price_number(where, entry["output"])
            )
    return published, table


@functools.cache
def _shipped() -> tuple[str, dict[str, Price]]:
    text = (
        resources.files("pytest_llmlab.report").joinpath("prices.toml").read_text(encoding="utf-8")
    )
    return _read_table(text)


#: The date the shipped prices were read from the providers' pages.
PRICES_PUBLISHED: str = _shipped()[0]


def builtin_prices() -> dict[str, Price]:
    """A copy of the shipped table (``prices.toml``)."""
    return dict(_shipped()[1])


def load_prices(extra: Mapping[str, Price | tuple[float, float]] | None = None) -> dict[str, Price]:
    """The shipped prices with ``extra`` (a user's table) merged on top."""
    prices = builtin_prices()
    for model, price in (extra or {}).items():
        prices[model] = Price(*price)
    return prices


def find_price(prices: Mapping[str, Price], *names: str | None) -> tuple[str, Price] | None:
    """The first of ``names`` with a price, as ``(key, price)``.

    Each name is tried as given, without its ``provider:`` prefix, and without a dated
    snapshot or ``-latest`` suffix.
    """
    for name in names:
        if not name:
            continue
        bare = name.partition(":")[2] if ":" in name else name
        for candidate in (name, bare, _SNAPSHOT.sub("", bare)):
            if candidate in prices:
                return candidate, prices[candidate]
    return None


def generation_cost(
    record: Mapping[str, Any],
    prices: Mapping[str, Price],
    kwh_price: float | None,
) -> tuple[float | None, CostSource]:
    """``(cost, source)`` of one record; see the module docstring for the order."""
    found = find_price(prices, record.get("spec"), record.get("model"))
    if found is not None:
        prompt = finite_or_none(record.get("prompt_tokens"))
        completion = finite_or_none(record.get("completion_tokens"))
        if prompt is not None and completion is not None:
            price = found[1]
            return (prompt * price.input + completion * price.output) / 1e6, "tokens"
    energy = energy_of(record)
    wh = finite_or_none(energy.get("wh"))
    if kwh_price is not None and wh is not None:
        return wh / 1000.0 * kwh_price, "energy"
    recorded = finite_or_none(energy.get("cost"))
    if recorded is not None:
        return recorded, "recorded"
    return None, "none"
