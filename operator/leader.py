"""Leader election over a `coordination.k8s.io` Lease: of several operator replicas exactly one
is active, the others stand by, and one of them takes over once the active one stops renewing.

The rules are client-go's: the holder renews the Lease every RENEW_SECONDS; a standby takes it
over once it has seen the same record (holder, renewTime) unchanged for LEASE_SECONDS, timed by
its own clock (never by comparing clocks across machines); every write carries the Lease's
resourceVersion, so of two replicas taking over at once one gets 409 and stays standby. An
active replica that cannot renew for LEASE_SECONDS must stop at once: another may already lead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger("kondense.operator")

LEASE_NAME = "kondense-operator"
LEASE_SECONDS = 15  # a standby takes over this long after the last renewal it saw
RENEW_SECONDS = 5  # the active replica renews this often
RETRY_SECONDS = 2  # a standby looks this often


def _now() -> datetime:
    return datetime.now(UTC)


class LeaderElection:
    """One replica's view of the Lease `namespace/name`, as `identity`."""

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        identity: str,
        name: str = LEASE_NAME,
        lease_seconds: float = LEASE_SECONDS,
        request_timeout: float = 10.0,
    ) -> None:
        self.api = client.CoordinationV1Api(api_client)
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_seconds = lease_seconds
        self.timeout = request_timeout
        self._record: tuple[Any, Any] | None = None  # (holder, renewTime) last seen
        self._observed = 0.0  # time.monotonic() when that record was first seen

    def try_lead(self) -> bool:
        """Acquire the Lease when it is free or expired, renew it when held: whether this
        replica holds it now."""
        try:
            lease = self.api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self.timeout
            )
        except ApiException as error:
            if error.status != 404:
                raise
            return self._create()
        if lease.spec is None:
            lease.spec = client.V1LeaseSpec()
        spec = lease.spec
        record = (spec.holder_identity, spec.renew_time)
        if record != self._record:
            self._record, self._observed = record, time.monotonic()
        mine = spec.holder_identity == self.identity
        expired = time.monotonic() - self._observed >= self.lease_seconds
        if not mine and spec.holder_identity and not expired:
            return False
        now = _now()
        if not mine:
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
            log.info("taking over the Lease %s/%s from %r", self.namespace, self.name, record[0])
        spec.holder_identity = self.identity
        spec.renew_time = now
        spec.lease_duration_seconds = int(self.lease_seconds)
        try:
            self.api.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=self.timeout
            )
        except ApiException as error:
            if error.status == 409:  # another replica wrote first
                return False
            raise
        return True

    def _create(self) -> bool:
        now = _now()
        body = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                lease_duration_seconds=int(self.lease_seconds),
                acquire_time=now,
                renew_time=now,
                lease_transitions=0,
            ),
        )
        try:
            self.api.create_namespaced_lease(self.namespace, body, _request_timeout=self.timeout)
        except ApiException as error:
            if error.status == 409:
                return False
            raise
        return True

    def wait_until_leader(self, stop: threading.Event, retry: float = RETRY_SECONDS) -> bool:
        """Block until this replica holds the Lease (True) or `stop` is set (False)."""
        while not stop.is_set():
            try:
                if self.try_lead():
                    return True
            except Exception as error:  # the apiserver is away: keep standing by
                log.warning("leader election: %s", error)
            stop.wait(retry)
        return False

    def keep_leading(
        self, on_lost: Callable[[], None], stop: threading.Event, renew: float = RENEW_SECONDS
    ) -> None:
        """Renew every `renew` seconds; call `on_lost` once the Lease is another's or could
        not be renewed for the lease's duration."""
        last = time.monotonic()
        while not stop.wait(renew):
            try:
                if self.try_lead():
                    last = time.monotonic()
                    continue
                log.error("leader election: the Lease is held by %r", self._record)
            except Exception as error:
                log.warning("leader election: renewing failed: %s", error)
                if time.monotonic() - last < self.lease_seconds - renew:
                    continue
            on_lost()
            return
