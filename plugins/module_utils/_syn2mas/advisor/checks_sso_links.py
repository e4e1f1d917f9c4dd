# -*- coding: utf-8 -*-
# Copyright: contributors to matrix.syn2mas
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The checks of SSO: whether every SSO link in Synapse's database reaches a MAS provider.

A link's `auth_provider` is mapped to a MAS provider (by `synapse_idp_id` in MAS's config, or
explicitly); the import refuses links it cannot map, so each way a link can miss is a check.
"""

from __future__ import annotations

from ..errors import ConfigError
from .registry import (
    ERROR, MAPPING, MAS_CONFIG, MAS_UPSTREAM_PROVIDER, SYNAPSE_CONFIG, SYNAPSE_DB, SYNAPSE_SNAPSHOT, WARN, check,
    finding, plural,
)

OAUTH_DELEGATED = "oauth-delegated"  # the auth_provider of links a MAS wrote back into Synapse


def configured_providers(f) -> dict:
    """auth_provider -> Synapse's OIDC provider ({} when they cannot be read: reported while gathering)."""
    try:
        return {p.auth_provider: p for p in f.synapse.oidc_providers()}
    except ConfigError:
        return {}


def _unmapped(f) -> list:
    """(auth_provider, links) in use that map to no MAS provider, the links of a previous MAS aside."""
    return [(provider, n) for provider, n in f.synapse_db.in_use.items()
            if provider != OAUTH_DELEGATED and provider not in f.mapping]


@check("oauth_delegated_links", SYNAPSE_DB, "user_external_ids of a previous MAS",
       needs=(SYNAPSE_DB, SYNAPSE_SNAPSHOT))
def oauth_delegated_links(f):
    n = f.synapse_db.in_use.get(OAUTH_DELEGATED)
    if not n:
        return None
    return finding(ERROR, f"{plural(n, 'user link', 'user links')} with auth_provider 'oauth-delegated': mappings "
                   "written by a MAS that already managed this homeserver", "Synapse database, table user_external_ids",
                   "If they come from an earlier, abandoned attempt, delete them in Synapse: DELETE FROM "
                   "user_external_ids WHERE auth_provider = 'oauth-delegated'; if MAS is in use already, do not import "
                   "again")


def unknown_provider_refusal(provider: str, links: int) -> tuple:
    """(message, remedy) for SSO links of a provider Synapse's config does not define (CAS, SAML, removed)."""
    kind = {"cas": "CAS", "saml": "SAML"}.get(provider)
    what = f"{kind} login" if kind else (
        "an OIDC provider that is no longer in Synapse's config" if provider.startswith("oidc")
        else "a provider Synapse's config does not define")
    return (f"{plural(links, 'user link', 'user links')} of auth_provider {provider!r} ({what}) map to no MAS "
            "provider: these users would lose that way of logging in, and the import refuses unmapped links",
            "Either bridge it through an OpenID Connect adapter (e.g. Dex), add that to MAS's "
            f"upstream_oauth2.providers with synapse_idp_id: {provider} (or pass --upstreamProviderMapping "
            f"{provider}:<MAS provider id>) and run `mas-cli config sync`; or, if nobody logs in that way any more, "
            "import with --skipUnmappedProviders / skip_unmapped_providers (those users then need a password or "
            "another provider)")


@check("sso_links_unknown_provider", SYNAPSE_DB, "SSO links of CAS, SAML or removed providers",
       needs=(SYNAPSE_DB, SYNAPSE_SNAPSHOT))
def sso_links_unknown_provider(f):
    configured = configured_providers(f)
    found = []
    for provider, n in _unmapped(f):
        if provider not in configured:
            message, remedy = unknown_provider_refusal(provider, n)
            found.append(finding(ERROR, message, "Synapse database, table user_external_ids", remedy))
    return found


# The runbook's preparation writes these providers into MAS's config (with synapse_idp_id) and syncs them, before
# the import that needs them: remedied by the run.
@check("sso_provider_unmapped", MAS_CONFIG, "SSO providers in use without synapse_idp_id",
       needs=(MAPPING, SYNAPSE_CONFIG, SYNAPSE_SNAPSHOT), remedied_by=MAS_UPSTREAM_PROVIDER)
def sso_provider_unmapped(f):
    configured = configured_providers(f)
    found = []
    for provider, n in _unmapped(f):
        oidc = configured.get(provider)
        if oidc is None:
            continue
        found.append(finding(
            ERROR, f"{plural(n, 'user link', 'user links')} of Synapse's OIDC provider {oidc.idp_id!r} (auth_provider "
            f"{provider!r}, issuer {oidc.config.get('issuer', '?')}) have no MAS provider with synapse_idp_id: "
            f"{provider}", f.mas_where("upstream_oauth2.providers") if f.mas is not None else oidc.source,
            f"Add synapse_idp_id: {provider} to the MAS upstream provider for that issuer "
            "(matrix.syn2mas.mas_upstream_provider does it) and run `mas-cli config sync`; without it, these users "
            "cannot log in with that provider after the switch"))
    return found


@check("oidc_provider_not_in_mas", MAS_CONFIG, "Synapse OIDC providers without a MAS provider",
       needs=(MAS_CONFIG, SYNAPSE_CONFIG, SYNAPSE_SNAPSHOT), remedied_by=MAS_UPSTREAM_PROVIDER)
def oidc_provider_not_in_mas(f):
    """Providers nobody is linked to yet, but that people use to sign up (the old advisor's per-provider check)."""
    issuers = set()
    section = f.mas.raw.get("upstream_oauth2")
    for entry in (section.get("providers") or []) if isinstance(section, dict) else []:
        if isinstance(entry, dict) and entry.get("issuer"):
            issuers.add(str(entry["issuer"]).rstrip("/"))
    found = []
    for provider, oidc in configured_providers(f).items():
        if not oidc.enabled or provider in f.mapping or provider in f.synapse_db.in_use:
            continue
        issuer = str(oidc.config.get("issuer", "")).rstrip("/")
        if issuer and issuer in issuers:
            continue
        found.append(finding(
            WARN, f"Synapse's OIDC provider {oidc.idp_id!r} (issuer {issuer or '?'}) has no counterpart in MAS",
            oidc.source, f"Add it to MAS's upstream_oauth2.providers with synapse_idp_id: {provider} (mas-cli config "
            "generate --synapse-config writes it), and register MAS's callback URL at the identity provider, or "
            "people can no longer sign in with it"))
    return found
