"""MkDocs hook: the reference pages that are read from the code at build time, so they cannot drift.

- reference/settings.md: every setting, from vetro's pydantic settings class and each reference
  pipeline's own settings class;
- reference/cli.md: every `vetro` command, from the typer app (as the click command it builds);
- reference/metrics.md: every metric `vetro serve` exposes, from the counters' and histograms'
  declarations and from the collector that reads the gauges at scrape time;
- reference/alerts.md: every alert rule, from monitoring/alerts.yml.

Nothing here is committed as Markdown: `mkdocs build` writes the pages into the site only.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import sys
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from unittest import mock

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]

PAGES: dict[str, Callable[[], str]] = {}


def page(path: str) -> Callable[[Callable[[], str]], Callable[[], str]]:
    def register(render: Callable[[], str]) -> Callable[[], str]:
        PAGES[path] = render
        return render

    return register


def on_files(files: Files, config: Any) -> Files:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for path, render in PAGES.items():
        files.append(File.generated(config, path, content=render()))
    return files


def cell(text: object) -> str:
    """Text that is safe inside a Markdown table cell: one line, pipes escaped outside code spans
    (Python-Markdown's tables take a pipe inside backticks as text, and an escaped one as two characters)."""
    parts = str(text).replace("\n", " ").strip().split("`")
    return "`".join(part if inside % 2 else part.replace("|", "\\|") for inside, part in enumerate(parts))


def code(text: object) -> str:
    return cell(f"`{text}`")


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


GENERATED = (
    '!!! note "Generated"\n    This page is written by `mkdocs build` from {source}. Change the code, not this page.\n'
)


# --- settings ---------------------------------------------------------------------------------

# Where each of vetro's settings is listed. A setting that is in no group still appears, under
# "Other settings"; a name here that is not a setting fails the build.
SETTING_GROUPS: list[tuple[str, list[str]]] = [
    ("Servers", ["broker_url", "result_store_url", "database_url", "queue"]),
    ("Pipelines", ["pipelines", "dead_letter_store"]),
    ("Stage policy overrides", ["all_stages", "stages"]),
    (
        "Delivery",
        ["visibility_timeout", "unacked_restore_interval", "publish_max_retries", "shutdown_timeout", "task_events"],
    ),
    ("Redis durability", ["require_durable_redis"]),
    (
        "What a producer may submit",
        ["max_payload_bytes", "max_payload_depth", "max_payload_elements", "max_key_length"],
    ),
    ("Lifetimes in Redis", ["submit_dedup_ttl", "job_ttl", "replay_window"]),
    ("The reconciler", ["reconcile_interval", "reconcile_max_redrives"]),
    ("Calls to dependencies", ["http_connect_timeout", "http_read_timeout", "slow_call_seconds"]),
    (
        "Circuit breakers and rate limits",
        [
            "breakers_enabled",
            "breaker",
            "breaker_overrides",
            "breaker_store_url",
            "rate_limits",
            "rate_limit_max_inline_wait",
            "max_dependency_waits",
        ],
    ),
    (
        "Dead letters",
        ["dlq_retention_days", "dlq_max_rows", "quarantine_after", "max_deliveries", "spool_flush_interval"],
    ),
    ("Personal data", ["redact_fields", "encryption_keys"]),
    ("Logs, traces and Sentry", ["log_format", "log_payloads", "tracing", "sentry_dsn", "sentry_environment"]),
    (
        "`vetro serve` and health",
        [
            "serve_host",
            "serve_port",
            "serve_auth",
            "health_stall_seconds",
            "health_dead_letter_window",
            "metrics_top_fingerprints",
        ],
    ),
]

# What a setting does, for the settings whose declaration has no description. The declaration's
# own description wins; a key that names no setting fails the build.
SETTING_NOTES: dict[str, dict[str, str]] = {
    "Settings": {
        "broker_url": "the broker: Redis (`redis://`, `rediss://`, `unix://`) or RabbitMQ (`amqp://`)",
        "database_url": "the dead-letter store: `sqlite://` or `postgresql://` (psycopg 3)",
        "queue": "the queue of the stages; housekeeping uses `<queue>.control`",
        "visibility_timeout": (
            "seconds before a dead worker's unacknowledged message is delivered again (Redis broker); "
            "at least every stage's hard time limit + 3 s"
        ),
        "unacked_restore_interval": "seconds between sweeps that give back a dead worker's messages (Redis broker)",
        "publish_max_retries": "retries of a publish the broker refused",
        "max_payload_bytes": "a payload larger than this (as JSON) is refused",
        "http_connect_timeout": "seconds to connect to a dependency",
        "http_read_timeout": "seconds to wait for a dependency's answer",
        "breakers_enabled": "turn circuit breakers off",
        "breaker_overrides": "per dependency, JSON: `{dependency: {fail_max, reset_timeout}}`",
        "rate_limits": "per dependency, JSON: `{dependency: {rate, burst}}`",
    },
    "OrdersSettings": {
        "customer_service_url": "base URL of the customer service, when it is not `ORDERS_PARTNER_URL`",
        "routes": "routing rules, JSON list of `{destination, order_types, regions}` (an empty list matches all)",
    },
    "ProviderSyncSettings": {
        "page_size": "records asked for per page",
    },
    "BreakerPolicy": {
        "fail_max": "consecutive unhealthy answers (timeouts, connection errors, 5xx) that open the breaker",
        "reset_timeout": "seconds an open breaker waits before one trial call",
    },
    "RateLimit": {
        "rate": "calls per second, shared by every worker",
        "burst": "calls that may go at once",
    },
}

SECONDS = ("_ttl", "_window", "_timeout", "_interval", "_seconds", "_wait")


def _annotation_text(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _annotation_text(args[0])
    if origin in (typing.Union, types.UnionType):
        kinds = [_annotation_text(arg) for arg in args if arg is not type(None)]
        return " or ".join(kinds)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{value}`" for value in args)
    if origin is list:
        return "JSON list"
    if origin is dict:
        return "JSON object"
    names = {str: "text", int: "integer", float: "number", bool: "`true` or `false`"}
    if annotation in names:
        return names[annotation]
    name = getattr(annotation, "__name__", str(annotation))
    return "secret text" if name == "SecretStr" else name


def _comma_separated(field: Any) -> bool:
    """A list given as `a,b,c` rather than as JSON (pydantic-settings' NoDecode)."""
    return any(getattr(meta, "__name__", "") == "NoDecode" for meta in field.metadata)


def _bounds(field: Any) -> str:
    shown = []
    for meta in field.metadata:
        for attribute, sign in (("ge", "≥"), ("gt", ">"), ("le", "≤"), ("lt", "<")):
            value = getattr(meta, attribute, None)
            if value is not None:
                shown.append(f"{sign} {value}")
    return ", ".join(shown)


def _duration(seconds: float) -> str:
    for size, unit in ((86400, "day"), (3600, "hour"), (60, "min")):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return f"{count} {unit}{'s' if count != 1 and unit != 'min' else ''}"
    return ""


def _default_value(field: Any) -> Any:
    from pydantic_core import PydanticUndefined

    if field.default_factory is not None:
        return field.default_factory()
    return None if field.default is PydanticUndefined else field.default


def _default_text(name: str, field: Any) -> str:
    from pydantic import BaseModel, SecretStr

    value = _default_value(field)
    if value is None:
        return "unset" if not field.is_required() else "required"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list) and _comma_separated(field):
        return f"`{','.join(str(item) for item in value)}`" if value else "none"
    if isinstance(value, list | dict):
        dumped = [item.model_dump() if isinstance(item, BaseModel) else item for item in value]
        shown = dumped if isinstance(value, list) else value
        return f"`{json.dumps(shown, separators=(', ', ': '))}`"
    if isinstance(value, SecretStr):
        return "unset"
    if isinstance(value, int) and name.endswith("_bytes") and value % 1024 == 0:
        return f"`{value}` ({value // 1024} KiB)"
    if isinstance(value, int | float) and name.endswith(SECONDS):
        human = _duration(value)
        return f"`{value}` ({human})" if human else f"`{value}`"
    return f"`{value}`"


def _type_text(field: Any) -> str:
    kind = "comma-separated list" if _comma_separated(field) else _annotation_text(field.annotation)
    bounds = _bounds(field)
    return f"{kind}, {bounds}" if bounds else kind


def _what(cls: type, name: str, field: Any) -> str:
    notes = SETTING_NOTES.get(cls.__name__, {})
    return cell(field.description or notes.get(name, ""))


def _check_notes(classes: list[type]) -> None:
    known = {cls.__name__: cls for cls in classes}
    for owner, notes in SETTING_NOTES.items():
        if owner not in known:
            raise ValueError(f"docs hook: SETTING_NOTES names {owner}, which is not a settings class")
        unknown = set(notes) - set(known[owner].model_fields)
        if unknown:
            raise ValueError(f"docs hook: SETTING_NOTES for {owner} names no setting {sorted(unknown)}")


def _model_rows(prefix: str, model: type) -> list[tuple[str, ...]]:
    """One row per field of a nested model, as its own variable (`PREFIX__FIELD`)."""
    rows = []
    for name, field in model.model_fields.items():
        variable = code(f"{prefix}__{name.upper()}")
        rows.append((variable, _type_text(field), _default_text(name, field), _what(model, name, field)))
    return rows


def _setting_rows(cls: type, name: str, field: Any, prefix: str) -> list[tuple[str, ...]]:
    from pydantic import BaseModel

    from settings import StageOverride

    variable = f"{prefix}{name.upper()}"
    annotation = field.annotation
    policy = "see [stage policy](#stage-policy)"
    if annotation is StageOverride:
        return [(code(f"{variable}__<KNOB>"), policy, "the stage's own", _what(cls, name, field))]
    if typing.get_origin(annotation) is dict and "StageOverride" in str(annotation):
        shown = code(f"{variable}__<PIPELINE>__<STAGE>__<KNOB>")
        return [(shown, policy, "the stage's own", _what(cls, name, field))]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _model_rows(variable, annotation)
    return [(code(variable), _type_text(field), _default_text(name, field), _what(cls, name, field))]


HEADER = ("variable", "type", "default", "what")


def _settings_class_section(cls: type, heading: str, groups: list[tuple[str, list[str]]] | None) -> str:
    prefix = cls.model_config.get("env_prefix", "")
    fields = cls.model_fields
    out = []
    if groups is None:
        groups = [("", list(fields))]
    else:
        listed = [name for _, names in groups for name in names]
        unknown = sorted(set(listed) - set(fields))
        if unknown:
            raise ValueError(f"docs hook: SETTING_GROUPS names no setting {unknown}")
        rest = [name for name in fields if name not in listed]
        if rest:
            groups = [*groups, ("Other settings", rest)]
    out.append(f"## {heading}\n")
    doc = _own_doc(cls)
    if doc:
        out.append(doc.split("\n\n")[0] + "\n")
    for title, names in groups:
        if title:
            out.append(f"### {title}\n")
        rows = [row for name in names for row in _setting_rows(cls, name, fields[name], prefix)]
        out.append(table(HEADER, rows))
    return "\n".join(out)


def _own_doc(cls: type) -> str:
    """The class's own docstring's first paragraph (not one it inherits)."""
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    return doc.split("\n\n")[0].replace("\n", " ")


def _nested_model_section(title: str, model: type, where: str) -> str:
    rows = [
        (code(name), _type_text(field), _default_text(name, field), _what(model, name, field))
        for name, field in model.model_fields.items()
    ]
    doc = _own_doc(model)
    return f"### {title}\n\n{doc}\n\n{where}\n\n" + table(("field", "type", "default", "what"), rows)


def _config_module(package: str) -> types.ModuleType:
    """A pipeline package's `config` module, loaded on its own: importing the package would declare
    its stages, which reads vetro's settings from this environment."""
    [where] = importlib.util.find_spec(package).submodule_search_locations
    name = f"_vetro_docs_{package.replace('.', '_')}_config"
    spec = importlib.util.spec_from_file_location(name, Path(where) / "config.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pydantic resolves the module's annotations through it
    spec.loader.exec_module(module)
    return module


def _reference_pipeline_settings() -> Iterator[type]:
    from pydantic_settings import BaseSettings

    from settings.config import REFERENCE_PIPELINES

    for package in REFERENCE_PIPELINES:
        module = _config_module(package)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, BaseSettings)
                and value is not BaseSettings
                and value.__module__ == module.__name__
            ):
                yield value


@page("reference/settings.md")
def settings_page() -> str:
    from settings import BreakerPolicy, RateLimit, Settings, StageOverride, StagePolicy
    from settings.config import ENV_PREFIX

    if set(StageOverride.model_fields) != set(StagePolicy.model_fields):
        raise ValueError("docs hook: StageOverride and StagePolicy have different knobs")
    pipeline_classes = list(_reference_pipeline_settings())
    _check_notes([Settings, BreakerPolicy, RateLimit, *pipeline_classes])
    knobs = ", ".join(f"`{name.upper()}`" for name in StagePolicy.model_fields)
    out = [
        "# Settings\n",
        GENERATED.format(source="vetro's settings class and the reference pipelines' settings classes"),
        "Every setting is an environment variable, or a line of a `.env` file in the working directory. "
        f"vetro's own start with `{ENV_PREFIX}`. Each pipeline reads its own settings with its own prefix.\n",
        "A nested value is named with `__` between its parts, such as `VETRO_BREAKER__FAIL_MAX`. "
        "A JSON list or object is given as JSON. A comma-separated list is given as `a,b,c`.\n",
        "Every entry point checks every value when it starts. "
        "A bad value stops it with one line that names the variable.\n",
        _settings_class_section(Settings, "vetro's settings", SETTING_GROUPS),
        "## Nested values\n",
        "### Stage policy\n",
        _own_doc(StagePolicy) + "\n",
        "A stage's `@stage(...)` may set its own values of these knobs. Settings override both: "
        f"`{ENV_PREFIX}ALL_STAGES__<KNOB>` for every stage, then "
        f"`{ENV_PREFIX}STAGES__<PIPELINE>__<STAGE>__<KNOB>` for one stage. "
        f"The knobs are {knobs}. An override that names a stage that does not exist stops start-up.\n",
        table(
            ("knob", "type", "default", "what"),
            [
                (code(name), _type_text(field), _default_text(name, field), cell(field.description or ""))
                for name, field in StagePolicy.model_fields.items()
            ],
        ),
        _nested_model_section(
            "Breaker policy",
            BreakerPolicy,
            f"Used by `{ENV_PREFIX}BREAKER__<FIELD>` (every dependency) and by each entry of "
            f"`{ENV_PREFIX}BREAKER_OVERRIDES`.",
        ),
        _nested_model_section("Rate limit", RateLimit, f"Each entry of `{ENV_PREFIX}RATE_LIMITS`."),
        "## The reference pipelines' settings\n",
        "Each reference pipeline reads its own settings class, with its own prefix.\n",
    ]
    for cls in pipeline_classes:
        prefix = cls.model_config.get("env_prefix", "")
        section = _settings_class_section(cls, f"`{prefix}*`: {cls.__name__}", None)
        out.append(section.replace("## ", "### ", 1))
    return "\n".join(out)


# --- command line -----------------------------------------------------------------------------


def _walk(command: Any, context: Any, path: list[str]) -> Iterator[tuple[list[str], Any, Any]]:
    yield path, command, context
    for name, sub in getattr(command, "commands", {}).items():
        if getattr(sub, "hidden", False):
            continue
        yield from _walk(sub, sub.context_class(sub, info_name=name, parent=context), [*path, name])


def _argument_row(param: Any) -> tuple[str, ...]:
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    several = param.nargs == -1 or param.multiple
    if several and typing.get_origin(annotation) is list:
        annotation = typing.get_args(annotation)[0]
    kind = _annotation_text(annotation) if annotation is not None else ""
    name = (param.metavar or param.name.upper()) + ("..." if several else "")
    required = "yes" if param.required else "no"
    return (code(name), cell(kind), required, cell(getattr(param, "help", "") or ""))


def _option_row(param: Any, context: Any) -> tuple[str, ...]:
    names, text = param.get_help_record(context)
    if param.secondary_opts:
        names = " / ".join([", ".join(param.opts), ", ".join(param.secondary_opts)])
    return (code(names), cell(text))


@page("reference/cli.md")
def cli_page() -> str:
    import typer.main

    from vetro.cli import cli

    root = typer.main.get_command(cli)
    context = root.context_class(root, info_name="vetro")
    out = [
        "# Command line\n",
        GENERATED.format(source="the `vetro` command itself"),
        "Every command reads the [settings](settings.md) from the environment, like a worker does. "
        "An error is one line that starts with `error:`. "
        "A bad argument or an unknown id exits with code 2.\n",
        "Celery's own commands (`celery -A pipeline worker`, `beat`, `inspect`, `flower`) work unchanged; "
        "they are not listed here.\n",
    ]
    for path, command, ctx in _walk(root, context, ["vetro"]):
        if getattr(command, "hidden", False):
            continue
        level = "#" * min(len(path) + 1, 4)
        out.append(f"{level} `{' '.join(path)}`\n")
        if command.help:
            out.append(inspect.cleandoc(command.help) + "\n")
        out.append("```\n" + command.get_usage(ctx).removeprefix("Usage: ").strip() + "\n```\n")
        params = [p for p in command.get_params(ctx) if not getattr(p, "hidden", False)]
        arguments = [p for p in params if not p.opts or not p.opts[0].startswith("-")]
        options = [
            p for p in params if p not in arguments and p.name not in ("help", "install_completion", "show_completion")
        ]
        if arguments:
            out.append(table(("argument", "type", "required", "what"), [_argument_row(p) for p in arguments]))
        if options:
            out.append(table(("option", "what"), [_option_row(p, ctx) for p in options]))
        subcommands = [name for name, sub in getattr(command, "commands", {}).items() if not sub.hidden]
        if subcommands:
            out.append("Commands: " + ", ".join(f"`{' '.join([*path, name])}`" for name in subcommands) + ".\n")
    return "\n".join(out)


# --- metrics ----------------------------------------------------------------------------------


def _stand_in_report() -> Any:
    """A report with nothing in it, so the collector names every gauge without asking any server."""
    core = types.SimpleNamespace(checks=[], store_answered=True, queues=[], workers=[], breakers=[])
    dead = types.SimpleNamespace(by_status={}, open_groups=[], recent=0)
    return types.SimpleNamespace(
        at=0.0, ready=True, degraded=False, core=core, jobs_in_flight={}, quarantined=0, dead_letters=dead
    )


def _labels(labels: tuple[str, ...]) -> str:
    return ", ".join(f"`{label}`" for label in labels) or "none"


def _origin(name: str) -> str:
    return "Celery exporter" if name.startswith("celery_") else "vetro"


@page("reference/metrics.md")
def metrics_page() -> str:
    from pipeline.telemetry import metrics
    from vetro import ops

    declared = {metric.name for metric in (*metrics.COUNTERS, *metrics.HISTOGRAMS)}
    with (
        mock.patch.object(ops, "report", _stand_in_report),
        mock.patch.object(ops.metrics, "all_series", lambda: iter(())),
    ):
        families = [family for family in ops.ServiceCollector().collect() if family.name not in declared]
    ttl_days = metrics.METRIC_TTL // 86400
    counters = [
        (code(f"{m.name}_total"), _labels(m.labels), cell(m.help), _origin(m.name))
        for m in sorted(metrics.COUNTERS, key=lambda m: m.name)
    ]
    histograms = [
        (
            code(m.name),
            _labels(m.labels),
            cell(m.help),
            ", ".join(f"{bound:g}" for bound in m.buckets) + ", +Inf",
            _origin(m.name),
        )
        for m in sorted(metrics.HISTOGRAMS, key=lambda m: m.name)
    ]
    read = []
    for family in sorted(families, key=lambda f: f.name):
        exposed = f"{family.name}_count, {family.name}_sum" if family.type == "summary" else family.name
        labels = tuple(getattr(family, "_labelnames", ()))
        read.append((code(exposed), family.type, _labels(labels), cell(family.documentation), _origin(family.name)))
    return "\n".join(
        [
            "# Metrics\n",
            GENERATED.format(source="the metrics' declarations and the collector `vetro serve` scrapes"),
            "`vetro serve` serves every metric at `/metrics`, in Prometheus's text format, "
            "for the whole fleet. See [Watch it](../how-to/watch.md) to set it up.\n",
            "Names that start with `celery_` are the Celery exporter's names and labels, "
            "so dashboards and alerts written for Celery read them unchanged.\n",
            "Labels are bounded: pipelines, stages, failure and exception classes, task names, queues, "
            "dependencies, host names. A job id or a process id is never a label.\n",
            "## Counters\n",
            "Every process counts in memory and adds its counts to Redis about once a second, and when it "
            "exits. A process killed outright loses at most its last second. "
            f"A counter nobody adds to for {ttl_days} days expires, and reads as reset.\n",
            table(("metric", "labels", "what", "names"), counters),
            "## Histograms\n",
            "Counted like the counters. Each is exposed as `<name>_bucket`, `<name>_sum` and `<name>_count`.\n",
            table(("metric", "labels", "what", "bucket bounds", "names"), histograms),
            "## Read at scrape time\n",
            "`vetro serve` reads these from Redis, the broker and the dead-letter database at each scrape. "
            "`vetro_ready`, `vetro_degraded` and `vetro_check_up` are always there; the others need the "
            "result store to answer, and the dead-letter ones need the database.\n",
            table(("metric", "type", "labels", "what", "names"), read),
        ]
    )


# --- alerts -----------------------------------------------------------------------------------


@page("reference/alerts.md")
def alerts_page() -> str:
    import yaml

    rules = yaml.safe_load((ROOT / "monitoring" / "alerts.yml").read_text())
    out = [
        "# Alerts\n",
        GENERATED.format(source="`monitoring/alerts.yml`"),
        "The Prometheus alert rules in `monitoring/alerts.yml`, on what `vetro serve` exposes. "
        "Each description names the command to run next. The [runbook](../runbook.md) says what to do.\n",
    ]
    for group in rules["groups"]:
        for rule in group["rules"]:
            annotations = rule.get("annotations", {})
            out.append(f"## {rule['alert']}\n")
            out.append(f"{annotations.get('summary', '')}\n")
            severity = rule.get("labels", {}).get("severity", "")
            out.append(f"- severity: `{severity}`\n- fires after: `{rule.get('for', '0s')}`\n")
            out.append("```text\n" + " ".join(str(rule["expr"]).split()) + "\n```\n")
            out.append(" ".join(str(annotations.get("description", "")).split()) + "\n")
    return "\n".join(out)
