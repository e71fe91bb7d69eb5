"""The configuration document: one YAML file is the whole program."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value.rstrip("/")


HttpUrl = Annotated[str, AfterValidator(_http_url)]


class Strict(BaseModel):
    # A misspelled key must fail at startup, not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ErpConfig(Strict):
    dsn: SecretStr = Field(
        description="PostgreSQL: libpq string or postgresql:// URL; MariaDB/MySQL: mysql://user:pass@host:port/db"
    )
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

    @property
    def dialect(self) -> Literal["postgres", "mysql"]:
        """The ERP's SQL dialect, from the DSN's scheme."""
        dsn = self.dsn.get_secret_value()
        return "mysql" if dsn.startswith(("mysql://", "mariadb://")) else "postgres"


class SlotSourceConfig(Strict):
    kind: Literal["pg_slot"] = "pg_slot"
    slot: Identifier = "replicator"
    publication: Identifier = "replicator"
    status_interval_s: float = Field(1.0, gt=0)
    lag_warn_bytes: int = Field(1 << 30, gt=0, description="`check` warns when the slot retains more WAL")
    origin: Identifier = Field(
        "replicator", description="replication origin our own ERP writes carry; transactions with it are dropped"
    )


class ConnectConfig(Strict):
    """The Kafka Connect cluster running the Debezium connectors that feed the topics."""

    url: HttpUrl = Field(description="Kafka Connect REST URL, e.g. http://connect:8083")
    connectors: list[str] = Field(
        default_factory=list,
        description="connector config files (JSON, ${VAR} expanded), relative to this file; registered by `setup`",
    )


class KafkaSourceConfig(Strict):
    """Debezium change events from Kafka topics, consumed in a consumer group (scale-out)."""

    kind: Literal["kafka"]
    bootstrap_servers: str = Field(description="host:port[,host:port...] of the Kafka brokers")
    group_id: str = Field("replicator", description="consumer group shared by every replicator process")
    topic_prefix: str = Field(description="Debezium `topic.prefix`: topics are <prefix>.<schema|db>.<table>")
    topics: list[str] | None = Field(
        None, description="explicit topics; default: one per mapped table under topic_prefix"
    )
    transaction_topic: bool = Field(False, description="also consume <prefix>.transaction (transaction metadata)")
    consumer: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="extra librdkafka consumer settings, e.g. security.protocol"
    )
    unavailable_value_placeholder: str = "__debezium_unavailable_value"
    connect: ConnectConfig | None = Field(None, description="register and watch the Debezium connectors")
    topic_wait_s: float = Field(
        120.0,
        ge=0,
        description="at startup, wait this long for missing topics (a connector's first snapshot creates them)",
    )

    @field_validator("consumer")
    @classmethod
    def _no_owned_settings(cls, value: dict[str, str | int | float | bool]) -> dict[str, str | int | float | bool]:
        # Offsets are committed only after the CRM acknowledged the records: auto-commit would lose them.
        committing = "offsets are committed by the replicator after the CRM acknowledged the records"
        owned = {
            "enable.auto.commit": committing,
            "enable.auto.offset.store": committing,
            "group.id": "set source.group_id instead",
            "bootstrap.servers": "set source.bootstrap_servers instead",
        }
        for key, why in owned.items():
            if key in value:
                raise ValueError(f"{key!r} cannot be overridden: {why}; remove it from source.consumer")
        return value


class BinlogSourceConfig(Strict):
    """Row events straight from a MySQL/MariaDB binary log (ROW format, GTIDs), no Kafka."""

    kind: Literal["mysql_binlog"]
    server_id: int = Field(4242, ge=1, lt=2**32, description="replica server id; unique among the server's replicas")
    name: Identifier = Field("binlog", description="checkpoint stream name in the state store")


SourceConfig = Annotated[SlotSourceConfig | KafkaSourceConfig | BinlogSourceConfig, Field(discriminator="kind")]


class StateConfig(Strict):
    dsn: SecretStr | None = Field(None, description="defaults to erp.dsn: state lives beside the ERP data")


class BottleCrmConfig(Strict):
    kind: Literal["bottlecrm"] = "bottlecrm"
    url: HttpUrl
    token: SecretStr
    external_id_field: Identifier = "erp_id"
    concurrency: int = Field(4, ge=1, le=64)
    timeout_s: float = Field(15.0, gt=0)


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
    table: str = Field(description="ERP table: schema.table, or a bare name in `public` (MariaDB: the DSN's database)")
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

    @field_validator("fields")
    @classmethod
    def _some_fields(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError("map at least one CRM field")
        return value


class Config(Strict):
    erp: ErpConfig
    source: SourceConfig = SlotSourceConfig()
    state: StateConfig = StateConfig()
    crm: CrmConfig
    pipeline: PipelineConfig = PipelineConfig()
    metrics: MetricsConfig = MetricsConfig()
    mappings: dict[Identifier, EntityConfig]

    @model_validator(mode="before")
    @classmethod
    def _qualify_tables(cls, data: Any) -> Any:
        """Every mapped and related table schema-qualified, once, here: an unqualified name is
        in PostgreSQL's `public`, or for MariaDB/MySQL in the DSN's database."""
        if not isinstance(data, dict) or not isinstance(data.get("mappings"), dict):
            return data
        erp = data.get("erp")
        dsn = erp.get("dsn") if isinstance(erp, dict) else None
        qualifier = "public"
        if isinstance(dsn, str) and dsn.startswith(("mysql://", "mariadb://")):
            from urllib.parse import urlsplit

            qualifier = urlsplit(dsn).path.strip("/")

        def qualify(section: Any) -> Any:
            table = section.get("table") if isinstance(section, dict) else None
            if qualifier and isinstance(table, str) and "." not in table:
                return {**section, "table": f"{qualifier}.{table}"}
            return section

        out = {}
        for name, entity in data["mappings"].items():
            entity = qualify(entity)
            if isinstance(entity, dict) and isinstance(entity.get("related"), dict):
                entity = {**entity, "related": {k: qualify(v) for k, v in entity["related"].items()}}
            out[name] = entity
        return {**data, "mappings": out}

    @field_validator("source", mode="before")
    @classmethod
    def _default_kind(cls, value: Any) -> Any:
        # `kind` may be left out for the embedded default, the PostgreSQL slot.
        if isinstance(value, dict) and "kind" not in value:
            return {"kind": "pg_slot", **value}
        return value

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

    @model_validator(mode="after")
    def _source_fits_erp(self) -> Config:
        dialect = self.erp.dialect
        if dialect == "mysql" and self.source.kind == "pg_slot":
            raise ValueError(
                "source.kind: a MariaDB/MySQL ERP is read with `kind: mysql_binlog` (binary log) or `kind: kafka` "
                "(Debezium); `pg_slot` is for PostgreSQL"
            )
        if dialect == "postgres" and self.source.kind == "mysql_binlog":
            raise ValueError("source.kind: `mysql_binlog` needs a mysql:// erp.dsn; PostgreSQL uses `pg_slot`")
        if dialect == "mysql" and self.state.dsn is None:
            raise ValueError(
                "state.dsn: the state store is PostgreSQL; with a MariaDB/MySQL ERP set state.dsn to a PostgreSQL DSN"
            )
        return self

    @property
    def state_dsn(self) -> str:
        return (self.state.dsn or self.erp.dsn).get_secret_value()
