"""What a generation cost: cloud models by their token prices, local ones by energy.

Token prices come from two places, in this order:

1. the user's own table, the ini key ``llm_prices = "gpt-4o=2.5/10, openai:mine=1/4"``
   (USD per million input and output tokens, parsed by `parse_prices_option`; a model
   is found by its spec ``openai:gpt-4o``, its display name, or its bare name
   ``gpt-4o``, and a dated snapshot like ``gpt-4o-2024-08-06`` takes its base name's
   price); source ``"llm_prices"``;
2. for the cloud providers of `CLOUD_PRICE_PROVIDERS` (``openai:``, ``anthropic:``,
   ``gemini:``), the maintained `genai-prices <https://github.com/pydantic/genai-prices>`_
   package: its bundled snapshot, with dated prices (the price in force on the day
   the generation finished, ``finished_at``), context-length tiers and cached-input
   rates; source `price_source` (``"genai-prices 0.2.3"``). pytest-llmlab never starts
   genai-prices' ``UpdatePrices``, so no price is fetched at run time: upgrading the
   package brings newer prices. A cloud model neither knows has no price (``"no
   price"``), never a guess.

Local and self-hosted providers (``local:``, ``vllm:``, ``llamacpp:``, ``lmstudio:``...)
cost their energy: the measured or estimated Wh x the price per kWh (``"energy"``), or
the cost the run recorded (``energy.cost``, from ``--llm-kwh-price``; ``"recorded"``);
otherwise nothing (``"none"``). `generation_cost` applies that order to one record;
`price_record` fills a new record's ``cost``, ``cost_source`` and ``price_date``.

Currency: token prices are USD; the kWh price is the user's own currency, so do not
mix the two in one report without converting.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from pytest_llmlab.option_values import Price, parse_prices_option
from pytest_llmlab.report.summary import energy_of
from pytest_llmlab.stats import finite_or_none

if TYPE_CHECKING:
    from pytest_llmlab.results import Record

__all__ = [
    "CLOUD_PRICE_PROVIDERS",
    "NO_PRICE",
    "OVERRIDE_SOURCE",
    "Cost",
    "Price",
    "find_price",
    "format_usd",
    "generation_cost",
    "has_token_price",
    "load_prices",
    "parse_prices_option",
    "price_record",
    "price_source",
    "snapshot_cost",
]

#: Our providers whose models genai-prices prices, and its id for each. Every other
#: provider is local or self-hosted: its generations cost their energy.
CLOUD_PRICE_PROVIDERS: dict[str, str] = {
    "openai": "openai",
    "anthropic": "anthropic",
    "gemini": "google",
}

#: The source of a price from the user's ``llm_prices``.
OVERRIDE_SOURCE = "llm_prices"
#: The source of a cloud model that has no price.
NO_PRICE = "no price"

#: A dated snapshot or moving alias of a base model name.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{8}|latest)$")


class Cost(NamedTuple):
    """The cost of one generation: the amount (None without one), where it came from
    (``llm_prices``, `price_source`, ``no price``, ``energy``, ``recorded``, ``none``)
    and, for a genai-prices price, the day (UTC, ``YYYY-MM-DD``) whose prices apply."""

    amount: float | None
    source: str
    price_date: str | None = None


def price_source() -> str:
    """``genai-prices <version>``: the package version names its bundled snapshot
    (genai-prices does not date it). Should the process use prices fetched by
    genai-prices' ``UpdatePrices`` (a user's own code started it), ``(updated <day>)``
    says so."""
    from genai_prices import __version__, data_snapshot

    snapshot = data_snapshot.get_snapshot()
    if snapshot.from_auto_update:
        return f"genai-prices {__version__} (updated {snapshot.timestamp:%Y-%m-%d})"
    return f"genai-prices {__version__}"


def load_prices(extra: Mapping[str, Price | tuple[float, float]] | None = None) -> dict[str, Price]:
    """The user's own prices (``llm_prices``, ``--prices``) as a table: they win over
    genai-prices. The table is empty without them."""
    return {model: Price(*price) for model, price in (extra or {}).items()}


def find_price(prices: Mapping[str, Price], *names: str | None) -> tuple[str, Price] | None:
    """The first of ``names`` with a price in the user's table, as ``(key, price)``.

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


def snapshot_cost(
    provider: str,
    model: str,
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cached_prompt_tokens: int | None = None,
    when: datetime | None = None,
) -> float | None:
    """USD for these tokens of ``provider:model`` at genai-prices' prices on ``when``
    (default now): its tiers and cached-input rate apply. None when ``provider`` is not
    a cloud of `CLOUD_PRICE_PROVIDERS` or genai-prices does not know the model."""
    provider_id = CLOUD_PRICE_PROVIDERS.get(provider)
    if provider_id is None or not model:
        return None
    from genai_prices import Usage, calc_price

    cached = min(cached_prompt_tokens, prompt_tokens) if cached_prompt_tokens else None
    usage = Usage(
        input_tokens=prompt_tokens, cache_read_tokens=cached, output_tokens=completion_tokens
    )
    try:
        price = calc_price(
            usage,
            model,
            provider_id=provider_id,
            genai_request_timestamp=when or datetime.now(UTC),
        )
    except (LookupError, ValueError):  # an unknown model; usage it cannot price
        return None
    return float(price.total_price)


@functools.cache
def _known(provider: str, model: str) -> bool:
    return snapshot_cost(provider, model, prompt_tokens=0, completion_tokens=0) is not None


def has_token_price(spec: str, prices: Mapping[str, Price], *, display: str | None = None) -> bool:
    """Whether generations of ``spec`` (``provider:model``) cost tokens: the user's
    table has a price for it, or genai-prices does for a cloud provider's model."""
    if find_price(prices, spec, display) is not None:
        return True
    provider, _, model = spec.partition(":")
    return _known(provider, model)


def _day(finished_at: object) -> datetime:
    seconds = finite_or_none(finished_at)
    if seconds is None:
        return datetime.now(UTC)
    return datetime.fromtimestamp(seconds, UTC)


def _tokens(value: object) -> int | None:
    number = finite_or_none(value)
    if number is None or number < 0 or not float(number).is_integer():
        return None
    return int(number)


def _token_cost(record: Mapping[str, Any], prices: Mapping[str, Price]) -> Cost | None:
    """The record's cost at token prices; None when its provider costs energy."""
    spec = str(record.get("spec") or "")
    provider = str(record.get("provider") or spec.partition(":")[0])
    prompt = _tokens(record.get("prompt_tokens"))
    completion = _tokens(record.get("completion_tokens"))
    found = find_price(prices, spec or None, record.get("model"))
    if found is not None and prompt is not None and completion is not None:
        price = found[1]
        return Cost((prompt * price.input + completion * price.output) / 1e6, OVERRIDE_SOURCE)
    if provider not in CLOUD_PRICE_PROVIDERS:
        return None
    if prompt is None or completion is None:
        return Cost(None, NO_PRICE)
    when = _day(record.get("finished_at"))
    amount = snapshot_cost(
        provider,
        spec.partition(":")[2],
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_prompt_tokens=_tokens(record.get("cached_prompt_tokens")),
        when=when,
    )
    if amount is None:
        return Cost(None, NO_PRICE)
    return Cost(amount, price_source(), f"{when:%Y-%m-%d}")


def generation_cost(
    record: Mapping[str, Any],
    prices: Mapping[str, Price],
    kwh_price: float | None,
) -> Cost:
    """The `Cost` of one record; see the module docstring for the order. ``prices`` is
    the user's table (`load_prices`)."""
    tokens = _token_cost(record, prices)
    if tokens is not None:
        return tokens
    energy = energy_of(record)
    wh = finite_or_none(energy.get("wh"))
    if kwh_price is not None and wh is not None:
        return Cost(wh / 1000.0 * kwh_price, "energy")
    recorded = finite_or_none(energy.get("cost"))
    if recorded is not None:
        return Cost(recorded, "recorded")
    return Cost(None, "none")


def price_record(record: Record, prices: Mapping[str, Price]) -> None:
    """Fill a new record's ``cost`` (USD at token prices), ``cost_source`` and
    ``price_date``; all None for a generation that costs its energy (``energy.cost``)."""
    cost = _token_cost(record, prices)
    if cost is None:  # it costs its energy: energy.cost
        record["cost"] = record["cost_source"] = record["price_date"] = None
    else:
        record["cost"], record["cost_source"], record["price_date"] = cost


def format_usd(amount: float) -> str:
    """``$0.50``, ``$1,234.50``, ``$5.0013``, ``$0.000215``: four significant digits
    under a dollar, four decimals above, at least two, trailing zeros dropped."""
    if not math.isfinite(amount):
        return f"${amount}"
    digits = 4
    if 0 < abs(amount) < 1:
        digits = 3 - math.floor(math.log10(abs(amount)))
    whole, _, decimals = f"{amount:,.{digits}f}".partition(".")
    return f"${whole}.{decimals.rstrip('0').ljust(2, '0')}"
