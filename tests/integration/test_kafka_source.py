"""The Kafka source against a real broker (tansu): Debezium-shaped records in, offsets
committed by the group only for acknowledged work, through kills and rebalances.

The pipeline behind the source is the real Runner; the processor only records what it
was given (the CRM side has its own tests, and test_kafka_scaleout runs it all). Nothing
here reads high watermarks: tansu's are wrong.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from confluent_kafka import TopicPartition
from pydantic import ValidationError

from replicator.app import StartupError
from replicator.change import Change, Op, Position
from replicator.config.model import Config, KafkaSourceConfig
from replicator.devstack.postgres import free_port
from replicator.devstack.tansu import TANSU_CONSUMER_SETTINGS, Broker
from replicator.jobs.check_kafka import kafka_checks
from replicator.ops.health import Health
from replicator.ops.metrics import REGISTRY
from replicator.pipeline.processor import BatchReport
from replicator.pipeline.runner import Runner
from replicator.sources.debezium import DebeziumDecoder
from replicator.sources.kafka import KafkaSource, open_kafka_source, tp_of
from replicator.sources.kafka_letters import ENTITY as UNDECODABLE
from replicator.sources.kafka_letters import DeadLetters
from replicator.sources.kafka_offsets import TP
from replicator.sources.kafka_settings import consumer_settings
from replicator.state import migrations
from replicator.state.store import StateStore
from tests.fixtures.kafka import (
    committed_offsets,
    create_topics,
    heartbeat_event,
    item_change,
    item_key,
    message_event,
    produce,
    schema_change_event,
    transaction_events,
    truncate_event,
)

pytestmark = pytest.mark.integration

TABLE = "public.items"


@pytest.fixture
def state_dsn(pg_db: str) -> str:
    migrations.migrate(pg_db)
    return pg_db


@pytest.fixture
def group() -> str:
    return f"g{uuid.uuid4().hex[:10]}"


def settings(broker: Broker, group: str, prefix: str) -> dict[str, Any]:
    cfg = KafkaSourceConfig(
        kind="kafka",
        bootstrap_servers=broker.bootstrap,
        group_id=group,
        topic_prefix=prefix,
        consumer=dict(TANSU_CONSUMER_SETTINGS),
    )
    return consumer_settings(cfg)


def make_source(
    broker: Broker, group: str, prefix: str, topics: list[str], state_dsn: str | None = None
) -> KafkaSource:
    return KafkaSource(
        settings(broker, group, prefix),
        topics,
        DebeziumDecoder(source_name="kafka"),
        name=f"kafka:{group}",
        letters=DeadLetters(state_dsn) if state_dsn else None,
    )


def items(prefix: str, ids: Sequence[int], *, op: str = "c", n: int = 0) -> list[tuple[bytes | None, bytes | None]]:
    # Alternate the converter's two forms: with and without schemas.
    return [item_change(prefix, TABLE, op, {"id": i, "name": f"item {i}", "n": n}, schemas=i % 2 == 0) for i in ids]


def wait_until(
    what: str, condition: Callable[[], Any], timeout: float = 30.0, tick: Callable[[], Any] = lambda: None
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tick()
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_offsets_are_committed_only_after_ack_and_a_new_member_resumes_there(
    kafka_broker: Broker, topic_prefix: str, group: str
) -> None:
    topic = f"{topic_prefix}.{TABLE}"
    create_topics(kafka_broker.bootstrap, [topic])
    produce(kafka_broker.bootstrap, topic, items(topic_prefix, range(10)))

    source = make_source(kafka_broker, group, topic_prefix, [topic])
    source.start()
    try:
        reads: list[tuple[list[Change], int]] = []
        while sum(len(c) for c, _ in reads) < 10:
            changes = source.read(timeout=1.0, max_changes=4)
            if changes:
                reads.append((changes, source.committed))
        got = [c for changes, _ in reads for c in changes]
        assert [c.key for c in got] == [(i,) for i in range(10)]
        assert [c.position for c in got] == [Position(f"{topic}/0", i) for i in range(10)]
        assert got[0].op is Op.CREATE and got[0].table == TABLE and got[1].after == {"id": 1, "name": "item 1", "n": 0}
        time.sleep(1.0)
        assert committed_offsets(kafka_broker.bootstrap, group, topic, 1)[0] < 0, "committed before any ack"

        first, seq = reads[0]
        source.ack(Position(source.name, seq))
        expected = first[-1].position.offset + 1
        assert expected < 10
        assert source.take_acked() == {(topic, 0): expected}
        # The reader thread commits on its next poll; nothing new arrives, nothing else moves.
        wait_until(
            "the first read's commit",
            lambda: committed_offsets(kafka_broker.bootstrap, group, topic, 1)[0] > 0,
            tick=lambda: source.read(0.1),
        )
        assert committed_offsets(kafka_broker.bootstrap, group, topic, 1)[0] == expected
    finally:
        source.close()  # commits what was acknowledged, nothing more
    assert committed_offsets(kafka_broker.bootstrap, group, topic, 1)[0] == expected

    again = make_source(kafka_broker, group, topic_prefix, [topic])
    again.start()
    try:
        rest: list[Change] = []
        wait_until(
            "the unacknowledged records again",
            lambda: len(rest) >= 10 - expected,
            tick=lambda: rest.extend(again.read(0.5)),
        )
        assert [c.position.offset for c in rest] == list(range(expected, 10))
    finally:
        again.close()


def test_records_without_crm_effect_advance_the_offsets(kafka_broker: Broker, topic_prefix: str, group: str) -> None:
    data = f"{topic_prefix}.{TABLE}"
    heartbeats = f"__debezium-heartbeat.{topic_prefix}"
    schema_changes = topic_prefix  # the MySQL connector's schema change topic is named after the prefix
    transactions = f"{topic_prefix}.transaction"
    create_topics(kafka_broker.bootstrap, [data, heartbeats, schema_changes, transactions])
    row = {"id": 1, "name": "one", "n": 1}
    produce(
        kafka_broker.bootstrap,
        data,
        [
            item_change(topic_prefix, TABLE, "c", row),
            item_change(topic_prefix, TABLE, "d", row, schemas=False),
            (item_key(topic_prefix, TABLE, 1), None),  # the tombstone after a delete
            message_event(topic_prefix),
            truncate_event(topic_prefix, TABLE),
            item_change(topic_prefix, TABLE, "c", {"id": 2, "name": "two", "n": 2}),
        ],
    )
    produce(kafka_broker.bootstrap, heartbeats, [heartbeat_event(topic_prefix), heartbeat_event(topic_prefix)])
    produce(kafka_broker.bootstrap, schema_changes, [schema_change_event(topic_prefix)])
    produce(kafka_broker.bootstrap, transactions, transaction_events("771", {TABLE: 2}))
    ends = {data: 6, heartbeats: 2, schema_changes: 1, transactions: 2}

    def kinds(kind: str, topic: str) -> float:
        return REGISTRY.get_sample_value("replicator_kafka_records_total", {"topic": topic, "kind": kind}) or 0.0

    source = make_source(kafka_broker, group, topic_prefix, list(ends))
    got: list[Change] = []

    def step() -> None:
        got.extend(source.read(0.3))
        source.ack(Position(source.name, source.committed))

    def all_committed() -> bool:
        return all(committed_offsets(kafka_broker.bootstrap, group, t, 1)[0] == end for t, end in ends.items())

    source.start()
    try:
        wait_until("every topic committed to its end", all_committed, timeout=40, tick=step)
    finally:
        source.close()
    assert [(c.op, c.key) for c in got] == [(Op.CREATE, (1,)), (Op.DELETE, (1,)), (Op.TRUNCATE, ()), (Op.CREATE, (2,))]
    assert got[2].table == TABLE
    assert kinds("tombstone", data) == 1 and kinds("message", data) == 1 and kinds("truncate", data) == 1
    assert kinds("heartbeat", heartbeats) == 2
    assert kinds("schema_change", schema_changes) == 1
    assert kinds("transaction", transactions) == 2


def test_undecodable_records_are_dead_lettered_and_the_partition_moves_on(
    kafka_broker: Broker, topic_prefix: str, group: str, state_dsn: str
) -> None:
    topic = f"{topic_prefix}.{TABLE}"
    create_topics(kafka_broker.bootstrap, [topic])
    key = item_key(topic_prefix, TABLE, 7)
    _, good = item_change(topic_prefix, TABLE, "c", {"id": 7, "name": "seven", "n": 7})
    produce(
        kafka_broker.bootstrap,
        topic,
        [
            item_change(topic_prefix, TABLE, "c", {"id": 6, "name": "six", "n": 6}),
            (key, b'{"schema": {"type": "struct"'),  # cut off: not JSON
            (key, b'{"hello": "world"}'),  # JSON, but no Debezium record
            (key, good.replace(b'"op":"c"', b'"op":"x"')),  # an unknown operation
            (key, b"\x00\xff binary \x00"),  # not even text
            item_change(topic_prefix, TABLE, "u", {"id": 6, "name": "six!", "n": 66}),
        ],
    )
    before = REGISTRY.get_sample_value("replicator_undecodable_events_total", {"topic": topic}) or 0.0
    source = make_source(kafka_broker, group, topic_prefix, [topic], state_dsn)
    got: list[Change] = []

    def step() -> None:
        got.extend(source.read(0.3))
        source.ack(Position(source.name, source.committed))

    source.start()
    try:
        wait_until(
            "the partition committed past the bad records",
            lambda: committed_offsets(kafka_broker.bootstrap, group, topic, 1)[0] == 6,
            tick=step,
        )
    finally:
        source.close()
    assert [(c.op, c.after) for c in got] == [
        (Op.CREATE, {"id": 6, "name": "six", "n": 6}),
        (Op.UPDATE, {"id": 6, "name": "six!", "n": 66}),
    ]
    store = StateStore(state_dsn)
    try:
        letters = store.dead_letters(entity=UNDECODABLE)
    finally:
        store.close()
    assert [d.source_position for d in letters] == [f"{topic}/0@{i}" for i in (1, 2, 3, 4)]
    assert all(d.payload["topic"] == topic and d.payload["partition"] == 0 for d in letters)
    assert [d.payload["offset"] for d in letters] == [1, 2, 3, 4]
    assert "not valid JSON" in letters[0].reason and f"{topic}/0@1" in letters[0].reason
    assert "'op'" in letters[1].reason
    assert "'x'" in letters[2].reason
    assert letters[3].payload["value"] is not None and "binary" in letters[3].payload["value"]
    after = REGISTRY.get_sample_value("replicator_undecodable_events_total", {"topic": topic})
    assert after == before + 4


# --- a consumer process killed with SIGKILL ------------------------------------------------------

CHILD = """
import os, sys, threading, time
from replicator.jobs.check_kafka import kafka_checks
from replicator.ops.health import Health
from replicator.pipeline.processor import BatchReport
from replicator.pipeline.runner import Runner
from replicator.sources.debezium import DebeziumDecoder
from replicator.sources.kafka import KafkaSource
import orjson

settings, topic, out = orjson.loads(sys.argv[1]), sys.argv[2], sys.argv[3]

class Writer:
    # Applies a change by appending its offset to a file, durably, a little slowly.
    def __init__(self):
        self.stop = threading.Event()
        self.fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    def process(self, changes, *, force=False):
        for c in changes:
            time.sleep(0.01)
            os.write(self.fd, f"{c.position.offset}\\n".encode())
        os.fsync(self.fd)
        return BatchReport(changes=len(changes))

source = KafkaSource(settings, [topic], DebeziumDecoder(), name="child")
Runner(source, Writer(), Health(60), batch_size=10, max_wait_s=0.01).run()
"""


def test_a_member_killed_mid_stream_resumes_without_loss(
    kafka_broker: Broker, topic_prefix: str, group: str, tmp_path: Path
) -> None:
    topic = f"{topic_prefix}.{TABLE}"
    create_topics(kafka_broker.bootstrap, [topic])
    total = 200
    produce(kafka_broker.bootstrap, topic, items(topic_prefix, range(total)))
    out = tmp_path / "applied.txt"
    args = [sys.executable, "-c", CHILD, orjson.dumps(settings(kafka_broker, group, topic_prefix)).decode(), topic]

    def applied() -> list[int]:
        return [int(x) for x in out.read_text().split()] if out.exists() else []

    def committed() -> int:
        return committed_offsets(kafka_broker.bootstrap, group, topic, 1)[0]

    first = subprocess.Popen([*args, str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until("a commit mid-stream", lambda: committed() > 20 and len(applied()) < total - 50, timeout=60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    before_kill = applied()
    at_kill = committed()
    assert 0 < at_kill < total
    # Only applied records were ever committed.
    assert set(range(at_kill)) <= set(before_kill)

    second = subprocess.Popen([*args, str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until("every record applied and committed", lambda: committed() == total, timeout=90)
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=30)
    after = applied()[len(before_kill) :]
    assert set(before_kill) | set(after) == set(range(total)), "records lost across the kill"
    assert after[0] == at_kill, "the restarted member resumes at the committed offset"
    assert after == list(range(at_kill, total)), err.decode(errors="replace")[-2000:]
    # Re-applied after the kill: exactly the records applied but not yet committed.
    assert sorted(set(before_kill) & set(after)) == [o for o in sorted(set(before_kill)) if o >= at_kill]


# --- two members, one rebalance ----------------------------------------------------------------


class Journal:
    """One ordered log of what every member did: assignments, processing, commits."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, str, Any]] = []

    def add(self, who: str, what: str, detail: Any) -> None:
        with self.lock:
            self.events.append((who, what, detail))


class JournaledSource(KafkaSource):
    def __init__(self, who: str, journal: Journal, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.who, self.journal = who, journal

    def _on_assign(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        super()._on_assign(consumer, partitions)
        self.journal.add(self.who, "assign", {(p.topic, p.partition) for p in partitions})

    def _on_revoke(self, consumer: Any, partitions: list[TopicPartition]) -> None:
        super()._on_revoke(consumer, partitions)
        self.journal.add(self.who, "revoke", {(p.topic, p.partition) for p in partitions})

    def _commit(self, consumer: Any, offsets: dict[TP, int], *, asynchronous: bool) -> None:
        self.journal.add(self.who, "commit", dict(offsets))
        super()._commit(consumer, offsets, asynchronous=asynchronous)


class SlowRecorder:
    def __init__(self, who: str, journal: Journal, per_batch_s: float) -> None:
        self.stop = threading.Event()
        self.who, self.journal, self.per_batch_s = who, journal, per_batch_s

    def process(self, changes: Sequence[Change], *, force: bool = False) -> BatchReport:
        for c in changes:
            self.journal.add(self.who, "process", (tp_of(c), c.position.offset))
        time.sleep(self.per_batch_s)
        return BatchReport(changes=len(changes))


@pytest.fixture
def members() -> Iterator[list[tuple[Runner, threading.Thread]]]:
    running: list[tuple[Runner, threading.Thread]] = []
    yield running
    for runner, _ in running:
        runner.stop.set()
    for _, thread in running:
        thread.join(30)


def test_rebalance_commits_no_revoked_partition_and_drops_stale_queued_changes(
    kafka_broker: Broker, topic_prefix: str, group: str, members: list[tuple[Runner, threading.Thread]]
) -> None:
    topic = f"{topic_prefix}.{TABLE}"
    partitions, total = 4, 400
    create_topics(kafka_broker.bootstrap, [topic], partitions=partitions)
    produce(kafka_broker.bootstrap, topic, items(topic_prefix, range(total)))
    journal = Journal()
    dropped = {"a": 0, "b": 0}

    def join(who: str, per_batch_s: float) -> None:
        source = JournaledSource(
            who,
            journal,
            settings(kafka_broker, group, topic_prefix),
            [topic],
            DebeziumDecoder(),
            name=f"kafka:{who}",
        )
        runner = Runner(source, SlowRecorder(who, journal, per_batch_s), Health(60), batch_size=5, max_wait_s=0.01)  # type: ignore[arg-type]
        quiesce = runner.quiesce

        def counting(drop: Callable[[Change], bool]) -> Any:
            def counted(change: Change) -> bool:
                hit = drop(change)
                dropped[who] += hit
                return hit

            return quiesce(counted)

        source.attach(counting)
        thread = threading.Thread(target=runner.run, name=f"member-{who}")
        thread.start()
        members.append((runner, thread))

    join("a", per_batch_s=0.1)
    wait_until("member a processing", lambda: any(e[1] == "process" for e in journal.events), timeout=30)
    join("b", per_batch_s=0.02)

    def all_committed() -> bool:
        offsets = committed_offsets(kafka_broker.bootstrap, group, topic, partitions)
        return sum(max(0, o) for o in offsets.values()) == total

    wait_until("every partition committed to its end", all_committed, timeout=120)
    for runner, _ in members:
        runner.stop.set()
    for _, thread in members:
        thread.join(30)

    owned: dict[str, set[TP]] = {"a": set(), "b": set()}
    processed: list[tuple[str, TP, int]] = []
    committed_at: dict[TP, int] = {}
    rebalanced = False
    for who, what, detail in journal.events:
        if what == "assign":
            owned[who] |= detail
        elif what == "revoke":
            owned[who] -= detail
            rebalanced = rebalanced or who == "a"
        elif what == "process":
            tp, offset = detail
            assert tp in owned[who], f"{who} processed {tp}@{offset} without owning it"
            processed.append((who, tp, offset))
        elif what == "commit":
            for tp, offset in detail.items():
                assert tp in owned[who], f"{who} committed {tp}@{offset} for a partition it does not own"
                assert offset >= committed_at.get(tp, 0), f"commit of {tp} went backwards"
                committed_at[tp] = offset
    assert rebalanced, "member a never gave up partitions: the test did not exercise a rebalance"
    assert any(who == "b" for who, _, _ in processed), "member b never took over any work"
    assert dropped["a"] > 0, "a's queue held no stale work at the revoke: the test did not exercise dropping"
    seen = [(tp, offset) for _, tp, offset in processed]
    assert len(set(seen)) == total, "records lost"
    # The revoke committed what a had finished and dropped what it had only queued: nothing twice.
    assert len(seen) == total, f"{len(seen) - total} records processed twice"


# --- startup and `replicator check` ------------------------------------------------------------


def kafka_config(bootstrap: str, prefix: str, group: str, topic_wait_s: float = 1.0) -> Config:
    return Config.model_validate(
        {
            "erp": {"dsn": "postgresql://127.0.0.1:1/unused"},
            "source": {
                "kind": "kafka",
                "bootstrap_servers": bootstrap,
                "group_id": group,
                "topic_prefix": prefix,
                "consumer": dict(TANSU_CONSUMER_SETTINGS),
                "topic_wait_s": topic_wait_s,
            },
            "crm": {"kind": "discard"},
            "mappings": {
                "customers": {
                    "table": "public.customers",
                    "object": "account",
                    "fields": {"name": "name"},
                    "related": {"email": {"table": "contact_mechanisms", "join": {"customer_id": "id"}}},
                }
            },
        }
    )


def test_startup_names_missing_topics_and_check_reports_the_cluster(
    kafka_broker: Broker, topic_prefix: str, group: str, state_dsn: str
) -> None:
    cfg = kafka_config(kafka_broker.bootstrap, topic_prefix, group)
    parts: Any = SimpleNamespace(config=cfg, store=StateStore(state_dsn))
    try:
        create_topics(kafka_broker.bootstrap, [f"{topic_prefix}.public.customers"], partitions=2)
        with pytest.raises(StartupError) as missing:
            open_kafka_source(parts)
        assert f"{topic_prefix}.public.contact_mechanisms" in str(missing.value)
        assert "replicator setup --connect" in str(missing.value) and "topic_prefix" in str(missing.value)
        assert "after 1 s" in str(missing.value)
        findings = {f.check: f for f in kafka_checks(cfg)}
        assert findings["Kafka reachable"].level == "ok"
        assert findings["Kafka topics"].level == "fail"
        assert "contact_mechanisms" in findings["Kafka topics"].detail

        create_topics(kafka_broker.bootstrap, [f"{topic_prefix}.public.contact_mechanisms"], partitions=3)
        findings = {f.check: f for f in kafka_checks(cfg)}
        assert findings["Kafka topics"].level == "ok"
        assert "5 partition(s)" in findings["Kafka topics"].detail
        assert "consumer group" in findings

        opened = open_kafka_source(parts)
        assert isinstance(opened.source, KafkaSource)
        assert opened.source.topics == [f"{topic_prefix}.public.customers", f"{topic_prefix}.public.contact_mechanisms"]
        assert opened.on_ack is not None and opened.gauges
    finally:
        parts.store.close()


def test_check_reports_an_unreachable_broker(topic_prefix: str, group: str) -> None:
    cfg = kafka_config(f"127.0.0.1:{free_port()}", topic_prefix, group)
    (finding,) = kafka_checks(cfg)
    assert finding.check == "Kafka reachable" and finding.level == "fail"
    assert "bootstrap_servers" in finding.fix


def test_auto_commit_cannot_be_switched_on() -> None:
    with pytest.raises(ValidationError) as err:
        KafkaSourceConfig(
            kind="kafka", bootstrap_servers="b:9092", topic_prefix="erp", consumer={"enable.auto.commit": True}
        )
    assert "enable.auto.commit" in str(err.value) and "remove it from source.consumer" in str(err.value)


class StallingRecorder:
    """Takes its first batch only after `stall_s` (a CRM outage), the rest at once."""

    def __init__(self, stall_s: float) -> None:
        self.stop = threading.Event()
        self.stall_s = stall_s
        self.seen: list[int] = []

    def process(self, changes: Sequence[Change], *, force: bool = False) -> BatchReport:
        if not self.seen:
            self.stop.wait(self.stall_s)
        self.seen.extend(c.position.offset for c in changes)
        return BatchReport(changes=len(changes))


def test_a_stalled_pipeline_keeps_its_group_membership(kafka_broker: Broker, topic_prefix: str, group: str) -> None:
    # The pipeline stalls longer than max.poll.interval.ms with a full queue: the member must
    # stay in the group (no rebalance, so no second owner for the batch it has in flight).
    topic = f"{topic_prefix}.{TABLE}"
    create_topics(kafka_broker.bootstrap, [topic])
    produce(kafka_broker.bootstrap, topic, items(topic_prefix, range(60)))
    source = KafkaSource(
        {**settings(kafka_broker, group, topic_prefix), "max.poll.interval.ms": 7000},
        [topic],
        DebeziumDecoder(),
        name=f"kafka:{group}",
    )
    rebalances = [0]
    on_revoke, on_lost = source._on_revoke, source._on_lost

    def count(inner: Callable[[Any, list[TopicPartition]], None]) -> Callable[[Any, list[TopicPartition]], None]:
        def counted(consumer: Any, partitions: list[TopicPartition]) -> None:
            rebalances[0] += 1
            inner(consumer, partitions)

        return counted

    source._on_revoke, source._on_lost = count(on_revoke), count(on_lost)  # type: ignore[method-assign]
    recorder = StallingRecorder(stall_s=12.0)
    runner = Runner(source, recorder, Health(60), batch_size=5, max_wait_s=0.01, queue_size=5)  # type: ignore[arg-type]
    thread = threading.Thread(target=runner.run, daemon=True)
    thread.start()
    try:
        wait_until("every record processed", lambda: len(recorder.seen) >= 60, timeout=60)
        wait_until(
            "every record committed", lambda: committed_offsets(kafka_broker.bootstrap, group, topic, 1)[0] == 60
        )
        while_running = rebalances[0]  # leaving the group at close revokes too
    finally:
        runner.stop.set()
        thread.join(30)
    assert while_running == 0, "the stalled member was dropped from the group and its partition revoked"
    assert recorder.seen == list(range(60)), "each record once, in order"


def test_startup_waits_for_topics_a_new_connector_is_still_creating(
    kafka_broker: Broker, topic_prefix: str, group: str, state_dsn: str
) -> None:
    # A connector registered just before `run` creates its topics table by table during the snapshot.
    cfg = kafka_config(kafka_broker.bootstrap, topic_prefix, group, topic_wait_s=30)
    parts: Any = SimpleNamespace(config=cfg, store=StateStore(state_dsn))
    create_topics(kafka_broker.bootstrap, [f"{topic_prefix}.public.customers"])
    late = threading.Timer(
        3.0, create_topics, args=(kafka_broker.bootstrap, [f"{topic_prefix}.public.contact_mechanisms"])
    )
    late.start()
    started = time.monotonic()
    try:
        opened = open_kafka_source(parts)
        assert isinstance(opened.source, KafkaSource)
        assert 2.5 < time.monotonic() - started < 30
    finally:
        late.join()
        parts.store.close()
