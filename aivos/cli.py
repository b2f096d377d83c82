"""The `aivos` command. Subcommands live beside the code they drive and are imported lazily,
so `aivos edge ...` never imports the cloud tier (and the edge install has no torch)."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click
from rich.console import Console

from aivos.shared import __version__
from aivos.shared.errors import AivosError

__all__ = ["main", "cli"]

# command path -> "module:attribute" of a click command or group
_COMMANDS: dict[str, dict[str, str]] = {
    "": {
        "up": "aivos.up:up_cmd",
        "ask": "aivos.edge.client_cli:ask_cmd",
        "doctor": "aivos.edge.doctor.cli:doctor_cmd",
        "backup": "aivos.edge.backup_cli:backup_cmd",
        "restore": "aivos.edge.backup_cli:restore_cmd",
        "offline-bundle": "aivos.offline_bundle:offline_bundle_cmd",
    },
    "install": {
        "edge": "aivos.install.cli:edge_cmd",
        "cloud": "aivos.install.cli:cloud_cmd",
    },
    "models": {
        "build": "aivos.cloud.modelbuild.cli:build_cmd",
        "publish": "aivos.cloud.fleet.cli:publish_cmd",
    },
    "intents": {
        "train": "aivos.cloud.modelbuild.cli:train_cmd",
        "eval": "aivos.edge.intent.cli:eval_cmd",
    },
    "edge": {"serve": "aivos.edge.cli:serve_cmd"},
    "tokens": {
        "create": "aivos.edge.store.cli:tokens_create_cmd",
        "revoke": "aivos.edge.store.cli:tokens_revoke_cmd",
    },
    "audit": {"verify": "aivos.edge.store.cli:audit_verify_cmd"},
    "approvals": {
        "list": "aivos.edge.approvals_cli:list_cmd",
        "approve": "aivos.edge.approvals_cli:approve_cmd",
        "reject": "aivos.edge.approvals_cli:reject_cmd",
    },
    "candidates": {
        "list": "aivos.edge.candidates_cli:list_cmd",
        "label": "aivos.edge.candidates_cli:label_cmd",
        "export": "aivos.edge.candidates_cli:export_cmd",
    },
    "kb": {"add": "aivos.edge.knowledge.cli:kb_add_cmd"},
    "workflows": {
        "validate": "aivos.edge.workflows.cli:validate_cmd",
        "list": "aivos.edge.workflows.cli:list_cmd",
        "run": "aivos.edge.workflows.cli:run_cmd",
    },
    "nats": {
        "config": "aivos.shared.natsconf.cli:nats_config_cmd",
        "rotate-cert": "aivos.shared.natsconf.rotate_cli:rotate_cert_cmd",
        "reload": "aivos.cloud.fleet.reload_cli:reload_cmd",
    },
    "pki": {"init": "aivos.shared.natsconf.pki_cli:pki_init_cmd"},
    "residency": {"mask": "aivos.shared.residency.cli:mask_cmd"},
    "cloud": {
        "worker": "aivos.cloud.worker.cli:worker_cmd",
        "workers": "aivos.cloud.models.cli:workers_cmd",
        "router": "aivos.cloud.models.cli:router_cmd",
        "models": "aivos.cloud.models.cli:models_cmd",
        "costs": "aivos.cloud.models.cli:costs_cmd",
        "ingest": "aivos.cloud.ingest.cli:ingest_cmd",
        "stats": "aivos.cloud.ingest.cli:stats_cmd",
        "audit": "aivos.cloud.ingest.cli:audit_cmd",
        "console": "aivos.cloud.console.cli:console_cmd",
        "fleet": "aivos.cloud.fleet.cli:fleet_serve_cmd",
    },
    "fleet": {
        "keygen": "aivos.cloud.fleet.cli:keygen_cmd",
        "add": "aivos.cloud.fleet.cli:add_cmd",
        "sites": "aivos.cloud.fleet.cli:sites_cmd",
        "config": "aivos.cloud.fleet.cli:config_group",
        "operator": "aivos.cloud.fleet.cli:operator_group",
        "operator-token": "aivos.cloud.fleet.cli:operator_token_group",
        "enroll": "aivos.cloud.fleet.enroll_cli:enroll_cmd",
        "revoke": "aivos.cloud.fleet.enroll_cli:revoke_cmd",
        "rotate": "aivos.cloud.fleet.enroll_cli:rotate_cmd",
    },
    "rollout": {
        "start": "aivos.cloud.fleet.cli:rollout_start_cmd",
        "list": "aivos.cloud.fleet.cli:rollout_list_cmd",
        "pause": "aivos.cloud.fleet.cli:rollout_pause_cmd",
        "resume": "aivos.cloud.fleet.cli:rollout_resume_cmd",
        "abort": "aivos.cloud.fleet.cli:rollout_abort_cmd",
        "rollback": "aivos.cloud.fleet.cli:rollout_rollback_cmd",
    },
}

_HELP = {
    "models": "Build and publish intent model bundles (cloud tier).",
    "intents": "Train and evaluate intent bundles on your own labelled data.",
    "edge": "Run the branch-site agent.",
    "install": "Install a branch box or a cloud node as systemd services.",
    "tokens": "Create and revoke API tokens of the edge agent.",
    "audit": "Inspect the edge agent's hash-chained audit log.",
    "approvals": "Workflow runs waiting for an operator's approval: list, approve, reject.",
    "candidates": "Hard examples kept on site: list, label, export for a site-built bundle.",
    "kb": "Manage the edge agent's knowledge index.",
    "workflows": "Validate, list and run edge workflows.",
    "residency": "Check what the residency policy lets leave the site (PII masking).",
    "nats": "NATS topology helpers (hub and site leaf configs).",
    "pki": "The private CA for TLS and identities on NATS links.",
    "cloud": "Cloud tier services: generation workers, fleet ingest.",
    "fleet": "Fleet registry: sites, remote config, operators, signing keys.",
    "rollout": "Staged, health-gated model bundle rollouts.",
}


def _unavailable(name: str, missing: str) -> click.Command:
    message = (
        f"'{name}' needs a module that is not installed ({missing}); "
        "install the cloud tier with: pip install 'aivos[cloud]'"
    )

    def fail() -> None:
        raise click.ClickException(message)

    return click.Command(name, callback=fail, help=f"(unavailable: {missing} is not installed)")


def _load(name: str, target: str) -> click.Command:
    module_name, attr = target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        return _unavailable(name, exc.name or module_name)
    command = getattr(module, attr)
    assert isinstance(command, click.Command)
    return command


class LazyGroup(click.Group):
    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._lazy))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy:
            command = _load(cmd_name, self._lazy[cmd_name])
            command.name = cmd_name
            return command
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=LazyGroup, lazy=_COMMANDS[""], context_settings={"help_option_names": ["-h", "--help"]}
)
@click.version_option(__version__, prog_name="aivos")
def cli() -> None:
    """aivos: edge-to-cloud hybrid inference appliance."""


for _group_name, _commands in _COMMANDS.items():
    if _group_name:
        cli.add_command(LazyGroup(name=_group_name, lazy=_commands, help=_HELP.get(_group_name)))


def main(argv: list[str] | None = None) -> None:
    console = Console(stderr=True)
    try:
        code = cli.main(args=argv, prog_name="aivos", standalone_mode=False)
        if isinstance(code, int) and code != 0:  # `raise click.exceptions.Exit(n)` returns n here
            sys.exit(code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        console.print("[red]aborted[/red]")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except AivosError as exc:
        console.print(f"[bold red]error[/bold red] ({exc.code}): {exc}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
