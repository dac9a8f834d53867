"""``envrepro migrate``: the host side (docs/migrate.md). The in-container halves are runtime/migrate/."""
