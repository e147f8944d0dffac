"""What a route asks of its caller: ``dependencies=[need(LEADS_READ)]`` on every route. The
access middleware reads the rule from the route table before anything else looks at the
request; the dependency checks again (should the route ever be served without the middleware)
and declares the bearer scheme in the OpenAPI document."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Request, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.access.policy import Permission, may

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="Authorization: Bearer <token>: a personal token (`clientflow users add`), the bootstrap "
    "CLIENTFLOW_API_KEY, or an OpenID Connect token from the configured provider",
)


@dataclass(frozen=True)
class Rule:
    """``permission`` None: public (a signed link or webhook proves itself). ``optional``: a
    token is checked when sent, and the route decides (a survey answer comes with the e-mail's
    signed token or with a person's). ``person``: a read of one person's record, audited."""

    permission: Permission | None
    optional: bool = False
    person: bool = False

    @property
    def public(self) -> bool:
        return self.permission is None


def _principal(request: Request) -> Any:
    return request.scope.get("state", {}).get("principal")


def need(permission: Permission, *, person: bool = False, optional: bool = False) -> Any:
    """The dependency of a route that needs ``permission``."""
    rule = Rule(permission, optional=optional, person=person)

    async def check(
        request: Request, _credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
    ) -> None:
        principal = _principal(request)
        if principal is None:
            if optional:
                return
            raise HTTPException(
                401, "missing token: send 'Authorization: Bearer <token>'", {"WWW-Authenticate": "Bearer"}
            )
        if not may(principal.role, permission, principal.scopes):
            raise HTTPException(403, refusal(principal, permission))

    check.__clientflow_rule__ = rule  # type: ignore[attr-defined]  # read back by route_table(), docs and tests
    return Depends(check)


def public() -> Any:
    """The dependency of a public route (health, signed links, signed webhooks)."""

    async def open_to_all() -> None:
        return None

    open_to_all.__clientflow_rule__ = Rule(None)  # type: ignore[attr-defined]  # read back by route_table()
    return Depends(open_to_all)


def refusal(principal: Any, permission: Permission) -> str:
    if principal.scopes and principal.role in permission.roles:
        return f"this token is limited to {', '.join(principal.scopes)}; {permission.name} is not among them"
    return f"role {principal.role} may not {permission.description} ({permission.name}: {', '.join(permission.roles)})"


def rule_of(route: APIRoute) -> Rule | None:
    for dependency in route.dependencies:
        rule = getattr(dependency.dependency, "__clientflow_rule__", None)
        if rule is not None:
            return rule
    return None


def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every APIRoute under ``routes``, through included routers too."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        inner = getattr(route, "original_router", None)  # FastAPI's included router
        if inner is not None:
            yield from api_routes(list(inner.routes))


def route_table(app: Any) -> list[tuple[APIRoute, Rule | None]]:
    """Each API route of ``app`` with its rule (None: a route nobody gave a rule, refused)."""
    seen: set[int] = set()
    table = []
    for route in api_routes(list(app.routes)):
        if id(route) not in seen:
            seen.add(id(route))
            table.append((route, rule_of(route)))
    return table
