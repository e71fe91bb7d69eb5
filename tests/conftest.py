from hypothesis import settings

pytest_plugins = [
    "tests.fixtures.pg",
    "tests.fixtures.crm",
    "tests.fixtures.stack",
    "tests.fixtures.prometheus",
    "tests.fixtures.kafka",
    "tests.fixtures.connect",
    "tests.fixtures.mariadb",
    "tests.fixtures.two_way",
    "tests.fixtures.sandbox",
    "tests.fixtures.saas",
]

# Two shared, noisy cores: a per-example deadline would fail on load, not on a bug.
settings.register_profile("replicator", deadline=None)
settings.load_profile("replicator")
