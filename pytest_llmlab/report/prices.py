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
import math
import re
import tomllib
from collections.abc import Mapping
from importlib import resources
from typing import Any, Literal, NamedTuple

from pytest_llmlab.models.spec import split_list

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


class Price(NamedTuple):
    """Price per million tokens: ``input`` (prompt) and ``output`` (completion)."""

    input: float
    output: float


def _number(value: Any) -> float | None:
    """A finite int or float as a float; None for anything else (bools included)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _check_price(where: str, value: Any) -> float:
    number = _number(value)
    if number is None or number < 0:
        raise ValueError(f"{where}: {value!r} is not a finite number >= 0")
    return number


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
                _check_price(where, entry["input"]), _check_price(where, entry["output"])
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


def parse_prices_option(text: str) -> dict[str, Price]:
    """Parse ``"model=in/out,model2=in/out"`` (USD per million tokens) into a table.

    Items are separated by commas or newlines; a model may carry its provider
    (``openai:gpt-4o=2.5/10``). A malformed item is a ValueError naming it.
    """
    table: dict[str, Price] = {}
    for item in split_list(text):
        model, sep, pair = item.rpartition("=")
        inp, slash, out = pair.partition("/")
        if not sep or not slash or not model.strip():
            raise ValueError(
                f"price {item!r} is not MODEL=INPUT/OUTPUT (USD per million tokens, "
                "such as gpt-4o=2.5/10)"
            )
        numbers: list[float] = []
        for part in (inp, out):
            try:
                number = float(part)
            except ValueError:
                raise ValueError(f"price {item!r}: {part.strip()!r} is not a number") from None
            numbers.append(_check_price(f"price {item!r}", number))
        table[model.strip()] = Price(numbers[0], numbers[1])
    return table


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
        prompt = _number(record.get("prompt_tokens"))
        completion = _number(record.get("completion_tokens"))
        if prompt is not None and completion is not None:
            price = found[1]
            return (prompt * price.input + completion * price.output) / 1e6, "tokens"
    energy = record.get("energy")
    energy = energy if isinstance(energy, dict) else {}
    wh = _number(energy.get("wh"))
    if kwh_price is not None and wh is not None:
        return wh / 1000.0 * kwh_price, "energy"
    recorded = _number(energy.get("cost"))
    if recorded is not None:
        return recorded, "recorded"
    return None, "none"
