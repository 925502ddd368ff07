"""Property-based API testing from the OpenAPI document (schemathesis against the live API):
no 500s, every response matches its declared schema and status codes.

schemathesis's pytest plugin does not run under this pytest, so the operations are driven with
its Python API and hypothesis directly."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from otelgw.seed import seed


def test_api_conforms_to_its_openapi_document(gateway) -> None:
    seed(gateway._clients.get(), inferences=200, projects=2, days=2, seed_value=3)
    schema = schemathesis.openapi.from_url(f"{gateway.api_url}/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 6
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=20, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case) -> None:
            # Schema-valid requests may still be refused on meaning (min_tokens > max_tokens,
            # a cursor we never issued): 400 with a message is right for those.
            case.call_and_validate(base_url=gateway.api_url, excluded_checks=[checks.positive_data_acceptance])

        check()
