pytest_plugins = ["tests.fixtures.pg", "tests.fixtures.crm", "tests.fixtures.stack"]
