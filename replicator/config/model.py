"""The configuration document: one YAML file is the whole program."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class Strict(BaseModel):
    # A misspelled key must fail at startup, not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErpConfig(Strict):
    dsn: SecretStr = Field(description="libpq connection string or URL of the ERP database")
    timezone: str = Field("UTC", description="zone for timestamp columns without a time zone")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as 'UTC' or 'Europe/Paris'") from None
        return value


class SlotSourceConfig(Strict):
    kind: Literal["pg_slot"] = "pg_slot"
    slot: Identifier = "replicator"
    publication: Identifier = "replicator"
    status_interval_s: float = Field(1.0, gt=0)
    lag_warn_bytes: int = Field(1 << 30, gt=0, description="`check` warns when the slot retains more WAL")
    origin: Identifier = Field(
        "replicator", description="replication origin our own ERP writes carry; transactions with it are dropped"
    )


class StateConfig(Strict):
    dsn: SecretStr | None = Field(None, description="defaults to erp.dsn: state lives beside the ERP data")


class BottleCrmConfig(Strict):
    kind: Literal["bottlecrm"] = "bottlecrm"
    url: str
    token: SecretStr
    external_id_field: Identifier = "erp_id"
    concurrency: int = Field(4, ge=1, le=64)
    timeout_s: float = Field(15.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class NullCrmConfig(Strict):
    """Accepts everything and keeps nothing: dry runs and benchmarks (`kind: discard`)."""

    kind: Literal["discard"]


CrmConfig = Annotated[BottleCrmConfig | NullCrmConfig, Field(discriminator="kind")]


class RetryConfig(Strict):
    max_attempts: int = Field(6, ge=1)
    initial_backoff_s: float = Field(0.2, gt=0)
    max_backoff_s: float = Field(10.0, gt=0)


class PipelineConfig(Strict):
    batch_size: int = Field(500, ge=1, le=100_000)
    max_wait_ms: int = Field(50, ge=0)
    queue_size: int = Field(10_000, ge=1, description="changes buffered between source and sink (backpressure)")
    stall_timeout_s: float = Field(60.0, gt=0, description="/healthz fails when pending work sees no ack for this long")
    retry: RetryConfig = RetryConfig()


class MetricsConfig(Strict):
    listen: str = Field("127.0.0.1:9108", description="host:port for /metrics and /healthz; empty disables")


class RelatedConfig(Strict):
    """A related row whose columns feed the record, e.g. a customer's primary email."""

    table: str
    join: dict[str, str] = Field(description="related column -> base column")
    where: str | None = None
    order_by: str | None = None

    @field_validator("join")
    @classmethod
    def _non_empty(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("needs at least one `related_column: base_column` pair")
        return value


class LookupConfig(Strict):
    """A CRM field holding the CRM id of another mapped entity's record."""

    entity: str
    key: list[str] = Field(description="base columns holding the parent's ERP key, in the parent's key order")
    required: bool = Field(True, description="wait for the parent; false sends null when the key is null")

    @field_validator("key", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class EntityConfig(Strict):
    table: str = Field(description="ERP table, schema-qualified or in `public`")
    object: Literal["account", "contact", "product", "opportunity"]
    key: list[str] | None = Field(None, description="key columns; defaults to the table's primary key")
    external_id: str | None = Field(None, description="SQL expression; defaults to the key value(s)")
    fields: dict[str, str]
    filter: str | None = Field(None, description="SQL predicate: rows failing it are not synced")
    soft_delete: str | None = Field(None, description="SQL predicate: true archives the CRM record")
    on_delete: Literal["delete", "archive", "ignore"] = "delete"
    related: dict[Identifier, RelatedConfig] = Field(default_factory=dict)
    lookups: dict[str, LookupConfig] = Field(default_factory=dict)

    @field_validator("key", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("table")
    @classmethod
    def _qualify(cls, value: str) -> str:
        return value if "." in value else f"public.{value}"

    @field_validator("fields")
    @classmethod
    def _some_fields(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("map at least one CRM field")
        return value


class Config(Strict):
    erp: ErpConfig
    source: SlotSourceConfig = SlotSourceConfig()
    state: StateConfig = StateConfig()
    crm: CrmConfig
    pipeline: PipelineConfig = PipelineConfig()
    metrics: MetricsConfig = MetricsConfig()
    mappings: dict[Identifier, EntityConfig]

    @model_validator(mode="after")
    def _lookups_resolve(self) -> Config:
        for name, entity in self.mappings.items():
            for field_name, lookup in entity.lookups.items():
                if lookup.entity not in self.mappings:
                    known = ", ".join(sorted(self.mappings))
                    raise ValueError(
                        f"mappings.{name}.lookups.{field_name}.entity: unknown entity {lookup.entity!r}; "
                        f"mapped entities are: {known}"
                    )
        return self

    @property
    def state_dsn(self) -> str:
        return (self.state.dsn or self.erp.dsn).get_secret_value()
