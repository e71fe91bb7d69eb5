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


class WebhookConfig(Strict):
    """Signed CRM webhooks, received on the service's HTTP server (`metrics.listen`)."""

    secret: SecretStr = Field(description="the endpoint's signing secret, shown once when the webhook was created")
    path: str = Field("/webhooks/bottlecrm", pattern=r"^/[A-Za-z0-9/_.-]*$", description="URL path of the receiver")
    tolerance_s: float = Field(
        300.0, gt=0, description="reject signatures whose timestamp is further than this from now (replays)"
    )


class PollConfig(Strict):
    """Polling the CRM: a safety net for lost webhooks, and the only feed for objects without them."""

    interval_s: float = Field(60.0, ge=0, description="seconds between polls; 0 turns polling off")
    lookback_s: float = Field(
        300.0, ge=0, description="re-read records modified this long before the cursor (clock skew, late commits)"
    )


class BottleCrmConfig(Strict):
    kind: Literal["bottlecrm"] = "bottlecrm"
    url: HttpUrl
    token: SecretStr
    external_id_field: Identifier = "erp_id"
    concurrency: int = Field(4, ge=1, le=64)
    timeout_s: float = Field(15.0, gt=0)
    webhooks: WebhookConfig | None = Field(None, description="CRM -> ERP changes pushed by BottleCRM")
    poll: PollConfig = PollConfig()


class BudgetConfig(Strict):
    """The CRM credential's API budget, shared by every replicator process that uses it (kept in the
    state store): at most `burst` requests in any rolling `window_s`, and `daily` per rolling 24 h."""

    burst: int | None = Field(None, ge=1, description="requests per window; none: no burst limit")
    window_s: float = Field(10.0, gt=0)
    daily: int | None = Field(None, ge=1, description="requests per rolling 24 h; none: no daily quota")
    shared: bool = Field(True, description="false keeps the budget in this process only (one process per credential)")


class HubSpotWebhookConfig(Strict):
    """HubSpot's signed webhooks (signature v3), received on the service's HTTP server."""

    client_secret: SecretStr = Field(description="the app's client secret: HubSpot signs deliveries with it")
    path: str = Field("/webhooks/hubspot", pattern=r"^/[A-Za-z0-9/_.-]*$")
    public_url: HttpUrl | None = Field(
        None,
        description="base URL HubSpot calls (it signs the full URL); default: what the request's Host header says",
    )
    tolerance_s: float = Field(300.0, gt=0, description="HubSpot's rule: reject timestamps older than 5 minutes")


class HubSpotConfig(Strict):
    kind: Literal["hubspot"]
    url: HttpUrl = "https://api.hubapi.com"
    token: SecretStr = Field(description="private app access token")
    id_property: Identifier = Field("erp_id", description="unique-value property holding the external id")
    concurrency: int = Field(2, ge=1, le=64)
    timeout_s: float = Field(15.0, gt=0)
    budget: BudgetConfig = Field(
        BudgetConfig(burst=190, window_s=10.0, daily=650_000),
        description="defaults: a private app on Professional (190 per 10 s, 650,000 a day)",
    )
    webhooks: HubSpotWebhookConfig | None = None
    poll: PollConfig = PollConfig()


class SalesforceConfig(Strict):
    kind: Literal["salesforce"]
    login_url: HttpUrl = Field("https://login.salesforce.com", description="where OAuth2 tokens are obtained")
    client_id: str = Field(description="the connected app's consumer key")
    client_secret: SecretStr
    refresh_token: SecretStr | None = Field(None, description="refresh-token flow; default: client credentials")
    username: str | None = None
    password: SecretStr | None = Field(None, description="username-password flow (password + security token)")
    api_version: str = Field("v62.0", pattern=r"^v\d+\.\d$")
    external_id_field: str = Field(
        "ERP_Id__c", pattern=r"^[A-Za-z][A-Za-z0-9_]*__c$", description="External ID custom field on each object"
    )
    concurrency: int = Field(2, ge=1, le=25, description="Salesforce allows 25 long-running requests per org")
    timeout_s: float = Field(30.0, gt=0)
    bulk_threshold: int = Field(
        2000, ge=1, description="backfill batches of at least this many records of one object go by Bulk API 2.0"
    )
    budget: BudgetConfig = Field(
        BudgetConfig(burst=None, daily=100_000),
        description="default: Enterprise's base daily allocation; set `daily` to your org's",
    )
    poll: PollConfig = PollConfig()

    @model_validator(mode="after")
    def _one_flow(self) -> SalesforceConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("set both `username` and `password` (username-password flow), or neither")
        if self.username is not None and self.refresh_token is not None:
            raise ValueError("set `refresh_token` or `username`/`password`, not both")
        return self


class NullCrmConfig(Strict):
    """Accepts everything and keeps nothing: dry runs and benchmarks (`kind: discard`)."""

    kind: Literal["discard"]


CrmConfig = Annotated[BottleCrmConfig | HubSpotConfig | SalesforceConfig | NullCrmConfig, Field(discriminator="kind")]

# The objects each CRM connector writes; line items are their own records only in HubSpot.
CRM_OBJECTS: dict[str, frozenset[str]] = {
    "bottlecrm": frozenset({"account", "contact", "product", "opportunity"}),
    "hubspot": frozenset({"account", "contact", "product", "opportunity", "line_item"}),
    "salesforce": frozenset({"account", "contact", "product", "opportunity"}),
}

# Each CRM's own modification-time field per object: what `crm_to_erp.timestamps.crm` means when
# left out, so `latest_wins` compares real times on every CRM without being told the vendor's name.
CRM_MODIFIED_FIELD: dict[str, dict[str, str]] = {
    "bottlecrm": dict.fromkeys(CRM_OBJECTS["bottlecrm"], "updated_at"),
    # HubSpot's search guide: contacts carry `lastmodifieddate`, the other objects `hs_lastmodifieddate`.
    "hubspot": dict.fromkeys(CRM_OBJECTS["hubspot"], "hs_lastmodifieddate") | {"contact": "lastmodifieddate"},
    "salesforce": dict.fromkeys(CRM_OBJECTS["salesforce"], "LastModifiedDate"),
}


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


Direction = Literal["erp_to_crm", "crm_to_erp", "both"]
ConflictPolicy = Literal["erp_wins", "crm_wins", "latest_wins", "never_overwrite_with_null", "manual"]


class FieldConfig(Strict):
    """One CRM field in full: which way it syncs, and how a CRM value becomes an ERP column value."""

    erp: str | None = Field(None, description="SQL over the ERP row giving the CRM value (ERP -> CRM)")
    direction: Direction = "erp_to_crm"
    column: Identifier | None = Field(
        None, description="ERP column the CRM value is written to; default: `erp` when it is a bare column"
    )
    reverse: str | None = Field(
        None, description="SQL over the CRM record giving the ERP column value; default: the CRM field itself"
    )
    owner: Literal["erp", "crm"] | None = Field(
        None, description="the side that wins when both changed the field (erp_wins / crm_wins)"
    )
    conflict: ConflictPolicy | None = Field(None, description="when both sides changed it; overrides `owner`")

    @model_validator(mode="after")
    def _coherent(self) -> FieldConfig:
        if self.erp is None and self.direction != "crm_to_erp":
            raise ValueError("`erp` (the SQL giving the CRM value) is required unless direction is crm_to_erp")
        if self.owner is not None and self.conflict is not None:
            raise ValueError("set `owner` or `conflict`, not both (owner: erp is conflict: erp_wins)")
        return self

    @property
    def policy(self) -> ConflictPolicy | None:
        if self.conflict is not None:
            return self.conflict
        return None if self.owner is None else ("erp_wins" if self.owner == "erp" else "crm_wins")


class LookupConfig(Strict):
    """A CRM field holding the CRM id of another mapped entity's record."""

    entity: str
    key: list[str] = Field(description="base columns holding the parent's ERP key, in the parent's key order")
    required: bool = Field(True, description="wait for the parent; false sends null when the key is null")
    direction: Direction = Field(
        "erp_to_crm", description="both: a CRM user re-pointing the record is written to the key columns"
    )

    @field_validator("key", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value


class TimestampsConfig(Strict):
    """Each side's own modification time, for `latest_wins`."""

    erp: str | None = Field(None, description="SQL over the ERP row, e.g. updated_at")
    crm: str | None = Field(
        None,
        description="the CRM record's modification-time field; by default the CRM's own (see CRM_MODIFIED_FIELD)",
    )


class LineLookupConfig(Strict):
    """A line column taken from the ERP row of another entity that a CRM reference points at."""

    entity: str = Field(description="mapped entity of the referenced CRM record, e.g. products")
    crm_field: str = Field(description="field of the CRM line holding the referenced record, e.g. product")
    column: Identifier = Field(description="column of that entity's ERP row to copy, e.g. id")


class LinesConfig(Strict):
    """Child rows written with a CRM-created record, e.g. an order's lines from a deal's line items."""

    table: str
    source: Identifier = Field("line_items", description="the CRM record's list of lines")
    parent: dict[Identifier, Identifier] = Field(description="line column -> column of the new parent row")
    values: dict[Identifier, str] = Field(default_factory=dict, description="line column -> SQL over the CRM line")
    lookups: dict[Identifier, LineLookupConfig] = Field(default_factory=dict)


class InsertConfig(Strict):
    """CRM records without an ERP row become ERP rows."""

    when: str | None = Field(None, description="SQL predicate over the CRM record; default: every new record")
    crm_id_column: Identifier | None = Field(
        None,
        description="ERP column (unique) that keeps the CRM id: the insert happens once even across crashes",
    )
    values: dict[Identifier, str] = Field(
        default_factory=dict, description="ERP column -> SQL over the CRM record, for columns fields do not write"
    )
    lines: LinesConfig | None = None


class CrmToErpConfig(Strict):
    """How CRM changes of this entity are written to the ERP."""

    conflict: ConflictPolicy = Field("erp_wins", description="policy of fields that set neither owner nor conflict")
    timestamps: TimestampsConfig = TimestampsConfig()
    audit: dict[Identifier, str] = Field(
        default_factory=dict, description="ERP column -> SQL set on every write, e.g. updated_at: now()"
    )
    insert: InsertConfig | None = None
    delete: Literal["ignore", "delete"] = Field("ignore", description="what a CRM delete does to the ERP row")


class EntityConfig(Strict):
    table: str = Field(description="ERP table: schema.table, or a bare name in `public` (MariaDB: the DSN's database)")
    object: Literal["account", "contact", "product", "opportunity", "line_item"]
    key: list[str] | None = Field(None, description="key columns; defaults to the table's primary key")
    external_id: str | None = Field(None, description="SQL expression; defaults to the key value(s)")
    fields: dict[str, str | FieldConfig]
    filter: str | None = Field(None, description="SQL predicate: rows failing it are not synced")
    soft_delete: str | None = Field(None, description="SQL predicate: true archives the CRM record")
    on_delete: Literal["delete", "archive", "ignore"] = "delete"
    related: dict[Identifier, RelatedConfig] = Field(default_factory=dict)
    lookups: dict[str, LookupConfig] = Field(default_factory=dict)
    crm_to_erp: CrmToErpConfig | None = Field(None, description="write CRM changes of this entity to the ERP")

    @field_validator("key", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("fields")
    @classmethod
    def _some_fields(cls, value: dict[str, str | FieldConfig]) -> dict[str, str | FieldConfig]:
        if not value:
            raise ValueError("map at least one CRM field")
        return value

    @property
    def field_specs(self) -> dict[str, FieldConfig]:
        """Every field in its full form (a plain string is an ERP -> CRM expression)."""
        return {k: FieldConfig(erp=v) if isinstance(v, str) else v for k, v in self.fields.items()}

    @property
    def forward_fields(self) -> dict[str, str]:
        """CRM field -> SQL over the ERP row, for fields that sync ERP -> CRM."""
        return {k: f.erp for k, f in self.field_specs.items() if f.erp is not None and f.direction != "crm_to_erp"}

    @property
    def two_way(self) -> bool:
        return self.crm_to_erp is not None

    @model_validator(mode="after")
    def _reverse_needs_crm_to_erp(self) -> EntityConfig:
        flowing = [k for k, f in self.field_specs.items() if f.direction != "erp_to_crm"]
        if flowing and self.crm_to_erp is None:
            raise ValueError(
                f"fields {', '.join(flowing)} sync CRM -> ERP: add a `crm_to_erp:` section (conflict policy, audit "
                "columns) to this entity"
            )
        return self


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
            back = entity.get("crm_to_erp") if isinstance(entity, dict) else None
            insert = back.get("insert") if isinstance(back, dict) else None
            if isinstance(back, dict) and isinstance(insert, dict) and isinstance(insert.get("lines"), dict):
                insert = {**insert, "lines": qualify(insert["lines"])}
                entity = {**entity, "crm_to_erp": {**back, "insert": insert}}
            out[name] = entity
        return {**data, "mappings": out}

    @model_validator(mode="before")
    @classmethod
    def _crm_modified_field(cls, data: Any) -> Any:
        """`crm_to_erp.timestamps.crm` left out: the CRM's own modification-time field for the object."""
        if not isinstance(data, dict) or not isinstance(data.get("mappings"), dict):
            return data
        crm = data.get("crm")
        names = CRM_MODIFIED_FIELD.get(str(crm.get("kind"))) if isinstance(crm, dict) else None
        if not names:
            return data
        out = {}
        for name, entity in data["mappings"].items():
            back = entity.get("crm_to_erp") if isinstance(entity, dict) else None
            stamps = back.get("timestamps", {}) if isinstance(back, dict) else None
            field = names.get(str(entity.get("object"))) if isinstance(entity, dict) else None
            if isinstance(back, dict) and isinstance(stamps, dict) and stamps.get("crm") is None and field:
                entity = {**entity, "crm_to_erp": {**back, "timestamps": {**stamps, "crm": field}}}
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
    def _objects_fit_crm(self) -> Config:
        supported = CRM_OBJECTS.get(self.crm.kind)
        if supported is None:
            return self
        for name, entity in self.mappings.items():
            if entity.object not in supported:
                raise ValueError(
                    f"mappings.{name}.object: crm.kind {self.crm.kind} has no {entity.object!r} records; "
                    f"use one of {', '.join(sorted(supported))}"
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
