from __future__ import annotations

from shardkeeper.coordinator.kube import not_found_message


def test_message_names_the_field_and_what_exists() -> None:
    assert not_found_message("ns", "web", ["db", "cache"]) == (
        'spec.cluster: no StatefulSet "web" in namespace "ns"; its StatefulSets: "cache", "db"'
    )
    assert "which has no StatefulSets" in not_found_message("ns", "web", [])
    assert not_found_message("ns", "web", None) == 'spec.cluster: no StatefulSet "web" in namespace "ns"'
    many = not_found_message("ns", "web", [f"s{i:02}" for i in range(25)])
    assert many.endswith('"s19" and 5 more')
