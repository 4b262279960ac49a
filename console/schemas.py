"""Request bodies: strict pydantic models (unknown fields are refused: no mass assignment)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoginBody(Body):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class AckBody(Body):
    note: str = Field(default="", max_length=500)


class ActionBody(Body):
    action: str = Field(min_length=1, max_length=40, pattern=r"^[a-z_]+$")
    note: str = Field(default="", max_length=2000)
    #: a supervisor's written reason to verify/close a sensor case while its alarm is still active
    override_reason: str | None = Field(default=None, min_length=1, max_length=2000)
    #: the unit a 改派 (reassign) or a dispatch sends the case to
    unit: str | None = Field(default=None, min_length=1, max_length=64)
    request_id: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_at: float
    username: str
    role: str
    unit: str | None
    csrf_token: str
