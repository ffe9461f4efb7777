"""Typed dependency aliases. The request's DB session commits when the endpoint returns normally
and rolls back on any exception; services never commit themselves.

The session dependency has ``scope="function"``: its exit (the commit) runs when the endpoint
returns, *before* the response is sent. A write is durable before the client hears "200/202",
and a commit that fails becomes a problem response instead of a success the database never kept."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, cast

from fastapi import Depends, Request
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from app.resources import Resources
from app.settings import Settings


def get_resources(request: Request) -> Resources:
    return cast(Resources, request.app.state.resources)


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def get_settings_dep(resources: ResourcesDep) -> Settings:
    return resources.settings


def get_redis(resources: ResourcesDep) -> Redis:
    return resources.redis


async def get_session(resources: ResourcesDep) -> AsyncIterator[AsyncSession]:
    async with resources.session_factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
RedisDep = Annotated[Redis, Depends(get_redis)]
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
