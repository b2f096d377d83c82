"""Model catalogue, circuit breaker, autoscaling decision, usage ledger and quotas."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from aivos.cloud.models.autoscale import Autoscaler, PoolSignals, ScalePolicy
from aivos.cloud.models.breaker import CircuitBreaker
from aivos.cloud.models.cli import summarize
from aivos.cloud.models.report import quota_states
from aivos.cloud.models.usage import (
    IntentQuotaExhausted,
    SiteQuotaExhausted,
    UsageLedger,
    read_intent_usage,
    read_usage,
)
from aivos.cloud.worker.catalogue import parse_catalogue
from aivos.cloud.worker.stats import LatencyWindow, percentile
from aivos.shared.errors import ConfigError
from aivos.shared.messages import Done, GenerateRequest, decode_reply, decode_request, encode

CATALOGUE = """
default_model = "smol"

[models.smol]
backend = "llamacpp"
version = "135m-q4_1"
cost_per_1k_tokens = 0.5
limits = { context = 1024, max_tokens = 64, concurrency = 1 }

[models.big]
backend = "openai"
version = "2025-01"
url = "http://127.0.0.1:9/v1"
min_budget_ms = 1500

[classes.small]
chain = ["smol@135m-q4_1"]

[classes.large]
chain = ["big", "smol"]

[quotas."*"]
tokens_per_day = 100

[quotas.vip]
requests_per_day = 2
"""


def test_catalogue_decodes_and_resolves_chains() -> None:
    cat = parse_catalogue(CATALOGUE)
    assert cat.models["smol"].limits.max_tokens == 64
    assert cat.models["big"].limits.concurrency == 2  # default
    chain = cat.resolve("large")
    assert [(link.model, link.primary) for link in chain] == [("big", True), ("smol", False)]
    assert chain[1].entry.version == "135m-q4_1"
    assert cat.quota("vip").requests_per_day == 2
    assert cat.quota("anyone").tokens_per_day == 100
    with pytest.raises(ConfigError, match="classes.huge"):
        cat.resolve("huge")


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        ('[classes.x]\nchain = ["nope"]', "classes.x.chain[0]"),
        ('[classes.x]\nchain = ["smol@old"]', "classes.x.chain[0]"),
        ('[classes.x]\nchain = ["smol", "smol"]', "classes.x.chain"),
        ("[classes.x]\nchain = []", "classes.x.chain"),
        ('[models.nourl]\nbackend = "openai"\nversion = "1"', "models.nourl.url"),
        ('[models.z]\nbackend = "llamacpp"\nversion = "1"\nsurprise = 1', "surprise"),
        ('[models.z]\nbackend = "onnx"\nversion = "1"', "backend"),
    ],
)
def test_invalid_catalogue_fails_with_the_key_path(patch: str, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_catalogue(CATALOGUE + "\n" + patch, "cat.toml")
    assert path in str(info.value)


def test_breaker_opens_after_failures_then_half_opens_for_one_trial() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=2, cooldown_s=10, clock=lambda: now[0])
    breaker.failure()
    assert breaker.allow()
    breaker.failure()
    assert breaker.state == "open" and not breaker.allow()
    now[0] = 10.0
    assert breaker.state == "half_open"
    assert breaker.allow()
    assert not breaker.allow()  # one trial at a time
    breaker.failure()  # the trial failed: open again
    assert breaker.state == "open"
    now[0] = 20.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed" and breaker.allow()
    assert breaker.opened == 2


def _signals(
    workers: int, *, waiting: int = 0, in_flight: int = 0, p95: float = 0.0
) -> PoolSignals:
    return PoolSignals(workers, 2, in_flight, waiting, 0, p95)


def test_autoscaler_grows_after_sustained_queue_and_shrinks_slower() -> None:
    now = [0.0]
    policy = ScalePolicy(1, 3, up_after_s=1, down_after_s=5, cooldown_s=2)
    scaler = Autoscaler(policy, clock=lambda: now[0])
    assert scaler.decide(1, _signals(1, waiting=3)) == 1  # not sustained yet
    now[0] = 1.0
    assert scaler.decide(1, _signals(1, waiting=3)) == 2
    now[0] = 2.0
    assert scaler.decide(2, _signals(2, waiting=5)) == 2  # cooldown
    now[0] = 3.5  # cooldown over, and the queue has held since 2.0
    assert scaler.decide(2, _signals(2, waiting=5)) == 3
    now[0] = 10.0
    assert scaler.decide(3, _signals(3, waiting=9)) == 3  # at max
    # idle: shrink only after down_after_s of quiet, one step at a time
    assert scaler.decide(3, _signals(3)) == 3
    now[0] = 14.0
    assert scaler.decide(3, _signals(3)) == 3
    now[0] = 15.0
    assert scaler.decide(3, _signals(3)) == 2
    # a load that would not fit in one worker fewer holds the size (hysteresis band)
    now[0] = 30.0
    assert scaler.decide(2, _signals(2, in_flight=2)) == 2
    now[0] = 40.0
    assert scaler.decide(2, _signals(2, in_flight=2)) == 2
    # p95 above the target grows the pool too
    p95_policy = ScalePolicy(1, 2, p95_up_ms=100, up_after_s=0, cooldown_s=0)
    busy = _signals(1, in_flight=1, p95=150)
    assert Autoscaler(p95_policy, clock=lambda: 0.0).decide(1, busy) == 2
    # ... but an idle pool's p95 is the last minute's history: no growth, and it may shrink
    eager = ScalePolicy(1, 2, p95_up_ms=100, up_after_s=0, down_after_s=0, cooldown_s=0)
    assert Autoscaler(eager, clock=lambda: 0.0).decide(1, _signals(1, p95=150)) == 1
    assert Autoscaler(eager, clock=lambda: 0.0).decide(2, _signals(2, p95=150)) == 1
    with pytest.raises(ConfigError):
        ScalePolicy(3, 2).validate()


def test_latency_window_percentile() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 95) == 5.0
    assert percentile([1.0, 2.0], 50) == 1.0
    window = LatencyWindow(max_age_s=10)
    for i in range(100):
        window.add(float(i + 1), now=0.0)
    assert window.p(95, now=5.0) == 95.0
    assert window.p(95, now=20.0) != window.p(95, now=20.0)  # NaN: all too old


def test_ledger_counts_cost_enforces_quotas_and_shares_a_file(tmp_path: Path) -> None:
    cat = parse_catalogue(CATALOGUE)
    db = tmp_path / "usage.sqlite"
    ledger = UsageLedger(cat, db, day=lambda: "2025-01-01")
    row = ledger.record("b1", "smol", "135m-q4_1", 30, 10, fallback=True)
    assert row.cost == pytest.approx(40 / 1000 * 0.5)
    ledger.check("b1")  # 40 of 100 tokens
    ledger.record("b1", "smol", "135m-q4_1", 50, 10, fallback=False)
    with pytest.raises(SiteQuotaExhausted) as info:
        ledger.check("b1")
    assert info.value.what == "tokens" and info.value.used == 100
    ledger.record("vip", "big", "2025-01", 1, 1, fallback=False)
    ledger.check("vip")
    ledger.record("vip", "big", "2025-01", 1, 1, fallback=False)
    with pytest.raises(SiteQuotaExhausted, match="requests"):
        ledger.check("vip")
    ledger.flush()
    # a second router on the same file sees the first one's counts
    other = UsageLedger(cat, db, day=lambda: "2025-01-01")
    with pytest.raises(SiteQuotaExhausted):
        other.check("b1")
    other.record("b1", "big", "2025-01", 5, 5, fallback=False)
    other.close()
    ledger.close()
    rows = read_usage(db, "2025-01-01")
    by_key = {(r.site, r.model): r for r in rows}
    assert by_key[("b1", "smol")].requests == 2
    assert by_key[("b1", "smol")].fallback == 1
    assert by_key[("b1", "smol")].tokens_in == 80
    assert by_key[("b1", "big")].requests == 1
    report = summarize(cat, rows)
    assert report["requests"] == 5
    assert report["sites"]["b1"]["requests"] == 3  # type: ignore[index]
    assert read_usage(db, "1999-01-01") == []


def test_new_fields_stay_off_the_wire_at_their_defaults() -> None:
    """A peer built before model routing (forbid_unknown_fields) still decodes what a new
    edge or worker sends when no model is named."""

    class OldRequest(
        msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="generate", tag_field="type"
    ):
        request_id: str
        site: str
        prompt: str
        priority: str = "interactive"

    class OldDone(
        msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag="done", tag_field="type"
    ):
        request_id: str
        text: str
        n_tokens: int
        backend: str = ""
        worker: str = ""

    request = GenerateRequest("r1", "b1", "hi")
    assert msgspec.json.decode(encode(request), type=OldRequest).prompt == "hi"
    done = Done("r1", text="ok", n_tokens=1, backend="llamacpp")
    assert msgspec.json.decode(encode(done), type=OldDone).backend == "llamacpp"
    named = GenerateRequest("r1", "b1", "hi", model_class="small")
    assert decode_request(encode(named)).model_class == "small"
    stamped = Done("r1", "ok", 1, model="smol", version="v1", fallback=True)
    assert decode_reply(encode(stamped)) == stamped


def test_intent_budgets_are_enforced_within_the_site_and_shared_through_the_file(
    tmp_path: Path,
) -> None:
    text = CATALOGUE.replace(
        '[quotas."*"]\ntokens_per_day = 100\n',
        '[quotas."*"]\ntokens_per_day = 100\nintents = { smalltalk = 30 }\n',
    )
    cat = parse_catalogue(text)
    db = tmp_path / "usage.sqlite"
    ledger = UsageLedger(cat, db, day=lambda: "2025-01-01")
    ledger.record("b1", "smol", "135m-q4_1", 20, 10, fallback=False, intent="smalltalk")
    with pytest.raises(IntentQuotaExhausted, match="intent smalltalk used 30 of 30") as info:
        ledger.check("b1", "smalltalk")
    assert (info.value.site, info.value.intent, info.value.code) == (
        "b1",
        "smalltalk",
        "quota_exceeded",
    )
    ledger.check("b1", "billing")  # other intents: only the site's 100 tokens bound them
    ledger.check("b1")
    ledger.check("b2", "smalltalk")  # the budget is per site
    ledger.flush()
    # after a flush the counts move from this process's live totals to the file's: still 30
    assert ledger.intent_today("b1", "smalltalk") == 30
    assert ledger.site_today("b1") == (1, 30)
    other = UsageLedger(cat, db, day=lambda: "2025-01-01")
    with pytest.raises(IntentQuotaExhausted):
        other.check("b1", "smalltalk")
    other.close()
    ledger.close()
    (row,) = read_intent_usage(db, "2025-01-01")
    assert (row.site, row.intent, row.requests, row.tokens_in, row.tokens_out) == (
        "b1",
        "smalltalk",
        1,
        20,
        10,
    )
    states = {(q.site, q.intent, q.what): q for q in quota_states(cat, db, "2025-01-01")}
    assert states[("b1", "smalltalk", "tokens")].exhausted
    assert not states[("b1", None, "tokens")].exhausted
    assert states[("vip", None, "requests")].used == 0  # a site with its own quota, no usage


def test_negative_intent_budget_fails_with_its_path() -> None:
    text = CATALOGUE + "\n[quotas.b9]\nintents = { refunds = -1 }\n"
    with pytest.raises(ConfigError, match=r"quotas\.b9\.intents\.refunds"):
        parse_catalogue(text)


def test_up_runs_a_pool_per_catalogue_entry_and_costs_show_budgets(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from aivos.cloud.models.cli import costs_cmd
    from aivos.cloud.models.up_pools import default_pool_commands

    commands = default_pool_commands(tmp_path, "nats://127.0.0.1:4222")
    catalogue = tmp_path / "catalogue.toml"
    assert [(c.name, c.role) for c in commands] == [("pools", "worker"), ("router", "router")]
    # one supervisor for every entry (no --model): it follows pushed catalogues
    assert commands[0].args[:2] == ("cloud", "workers")
    assert "--model" not in commands[0].args
    assert parse_catalogue(catalogue.read_text()).models.keys() == {"smol"}
    # an operator's catalogue is kept (and checked before anything starts)
    catalogue.write_text(
        CATALOGUE.replace('url = "http://127.0.0.1:9/v1"\n', 'url = "http://x/v1"\n')
    )
    assert [c.name for c in default_pool_commands(tmp_path, "nats://h:4222")] == [
        "pools",
        "router",
    ]
    assert "big" in parse_catalogue(catalogue.read_text()).models
    catalogue.write_text(CATALOGUE + '\n[models.bad]\nbackend = "openai"\nversion = "1"\n')
    with pytest.raises(ConfigError, match=r"models\.bad\.url"):
        default_pool_commands(tmp_path, "nats://h:4222")
    catalogue.write_text(
        CATALOGUE.replace('url = "http://127.0.0.1:9/v1"\n', 'url = "http://x/v1"\n')
    )
    ledger = UsageLedger(parse_catalogue(catalogue.read_text()), tmp_path / "model_usage.sqlite")
    ledger.record("vip", "smol", "135m-q4_1", 1, 1, fallback=False)
    ledger.record("vip", "smol", "135m-q4_1", 1, 1, fallback=False)
    ledger.close()
    out = CliRunner().invoke(costs_cmd, ["--data-dir", str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    quotas = {(q["site"], q["what"]): q for q in json.loads(out.output)["quotas"]}
    assert quotas[("vip", "requests")]["exhausted"] is True
    assert quotas[("vip", "requests")]["used"] == 2


def test_an_entry_sizes_its_pool_and_a_bad_size_fails_with_its_path() -> None:
    from aivos.cloud.models.autoscale import ScalePolicy
    from aivos.cloud.models.pool import worker_spec
    from aivos.cloud.models.pool_set import entry_policy

    text = CATALOGUE.replace('version = "135m-q4_1"', 'version = "135m-q4_1"\npool = { min = 3 }')
    cat = parse_catalogue(text)
    defaults = ScalePolicy(min_workers=1, max_workers=2)
    sized = entry_policy(defaults, cat.models["smol"])
    assert (sized.min_workers, sized.max_workers) == (3, 3)  # max follows a larger min
    other = entry_policy(defaults, cat.models["big"])
    assert (other.min_workers, other.max_workers) == (1, 2)  # the supervisor's defaults
    capped = entry_policy(ScalePolicy(min_workers=2, max_workers=4), cat.models["big"])
    assert (capped.min_workers, capped.max_workers) == (2, 4)
    small = parse_catalogue(text.replace("pool = { min = 3 }", "pool = { max = 1 }"))
    one = entry_policy(ScalePolicy(min_workers=2, max_workers=4), small.models["smol"])
    assert (one.min_workers, one.max_workers) == (1, 1)  # a max below the default min
    # the size is the supervisor's business: changing it does not roll the workers
    assert worker_spec(cat, "smol") == worker_spec(parse_catalogue(CATALOGUE), "smol")
    for bad in ("{ min = 0 }", "{ min = 3, max = 2 }", "{ max = 0 }"):
        broken = CATALOGUE.replace('version = "135m-q4_1"', f'version = "135m-q4_1"\npool = {bad}')
        with pytest.raises(ConfigError, match=r"models\.smol\.pool"):
            parse_catalogue(broken)


def test_a_standalone_worker_takes_its_gguf_apart_from_catalogue_models(tmp_path: Path) -> None:
    """`--gguf PATH` is the plain worker's model file; `--model NAME` the catalogue entries
    (both used to be `--model`: a GGUF path was read as a catalogue entry)."""
    from click.testing import CliRunner

    from aivos.cloud.worker.cli import worker_cmd

    missing = tmp_path / "x.gguf"
    out = CliRunner().invoke(worker_cmd, ["--nats", "nats://127.0.0.1:1", "--gguf", str(missing)])
    assert out.exit_code != 0
    assert "GGUF model file not found" in str(out.exception or out.output)
    assert str(missing) in str(out.exception or out.output)
    alone = CliRunner().invoke(worker_cmd, ["--model", "smol"])
    assert alone.exit_code == 2 and "--catalogue and --model go together" in alone.output
