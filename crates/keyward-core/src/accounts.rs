//! Accounts and sessions: registration, login, refresh-token rotation with reuse detection,
//! logout, password change, and the check of an access token on each request.

use std::sync::Arc;

use keyward_proto::{FieldError, RegisterRequest};

use crate::audit::{self, AuditEvent, AuditKind};
use crate::clock::Clock;
use crate::error::{AuthFailure, CoreError, CoreResult};
use crate::hashing::{sha256, PasswordHasher};
use crate::ids::{SessionId, TenantId, UserId};
use crate::jwt::TokenSigner;
use crate::keys::{record_of, KeyService, NewKeyInput};
use crate::profiles::{Profile, ProfileMemo};
use crate::secret::{AccessToken, ApiKeySecret, Password, RefreshToken};
use crate::store::{
    ApiKeyRecord, NewAccount, NewSession, Owner, SessionSummary, Store, TenantRecord, UserRecord,
};
use crate::validate::{Email, KeyName, TenantName, UserName};

#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Absolute lifetime of a session's refresh tokens, from login.
    pub refresh_token_ttl_days: i64,
    /// A spent refresh token presented again within this window is refused without revoking
    /// the session (two tabs refreshing at once); later, the reuse revokes the session.
    pub refresh_reuse_grace_seconds: i64,
    /// Mint an API key named `default` at registration.
    pub create_key_on_register: bool,
}

/// A parsed registration request.
#[derive(Debug, Clone)]
pub struct RegisterInput {
    pub email: Email,
    pub password: Password,
    pub name: Option<UserName>,
    pub tenant_name: Option<TenantName>,
}

impl RegisterInput {
    pub fn parse(request: RegisterRequest) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let email = Email::parse(&request.email)
            .map_err(|m| errors.push(FieldError::new("email", m)))
            .ok();
        let password = Password::parse(request.password.into_inner())
            .map_err(|m| errors.push(FieldError::new("password", m)))
            .ok();
        let name = match request.name.as_deref().map(UserName::parse).transpose() {
            Ok(name) => name,
            Err(m) => {
                errors.push(FieldError::new("name", m));
                None
            }
        };
        let tenant_name = match request
            .tenant_name
            .as_deref()
            .map(TenantName::parse)
            .transpose()
        {
            Ok(name) => name,
            Err(m) => {
                errors.push(FieldError::new("tenant_name", m));
                None
            }
        };
        match (email, password) {
            (Some(email), Some(password)) if errors.is_empty() => Ok(Self {
                email,
                password,
                name,
                tenant_name,
            }),
            _ => Err(errors),
        }
    }
}

/// Tokens handed to a client after login, registration or refresh.
#[derive(Debug)]
pub struct IssuedTokens {
    pub access_token: AccessToken,
    pub refresh_token: RefreshToken,
    pub expires_in: i64,
}

#[derive(Debug)]
pub struct Registered {
    pub user: UserRecord,
    pub tenant: TenantRecord,
    pub tokens: IssuedTokens,
    pub api_key: Option<(ApiKeyRecord, ApiKeySecret)>,
}

/// A caller authenticated by an access token whose session is live.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user_id: UserId,
    pub tenant_id: TenantId,
    pub session_id: SessionId,
}

pub struct AccountService {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    hasher: PasswordHasher,
    signer: Arc<TokenSigner>,
    keys: Arc<KeyService>,
    config: SessionConfig,
    profiles: ProfileMemo,
}

impl AccountService {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        hasher: PasswordHasher,
        signer: Arc<TokenSigner>,
        keys: Arc<KeyService>,
        config: SessionConfig,
    ) -> Self {
        Self {
            store,
            clock,
            hasher,
            signer,
            keys,
            config,
            profiles: ProfileMemo::default(),
        }
    }

    pub fn signer(&self) -> &TokenSigner {
        &self.signer
    }

    /// Creates the user, their tenant (they are its owner), a first session and, when
    /// configured, a first API key: all in one transaction.
    #[tracing::instrument(skip_all)]
    pub async fn register(
        &self,
        input: RegisterInput,
        device: Option<&str>,
    ) -> CoreResult<Registered> {
        let now = self.clock.now();
        let password_hash = self.hasher.hash(&input.password).await?;
        let tenant = TenantRecord {
            id: TenantId::generate(),
            name: input
                .tenant_name
                .unwrap_or_else(|| TenantName::for_email(&input.email))
                .as_str()
                .to_owned(),
            created_at: now,
        };
        let user = UserRecord {
            id: UserId::generate(),
            tenant_id: tenant.id.clone(),
            email: input.email,
            name: input.name.map(|name| name.as_str().to_owned()),
            password_hash,
            created_at: now,
            disabled_at: None,
        };
        let (session, refresh_token) = self.new_session(&user.id, &tenant.id, device);
        let api_key = if self.config.create_key_on_register {
            let owner = Owner {
                user_id: user.id.clone(),
                tenant_id: tenant.id.clone(),
            };
            let input = NewKeyInput {
                name: KeyName::from_stored("default".into()),
                description: None,
                expires_in_days: None,
                scopes: None,
                meta: None,
                rate_limit: None,
                credits: None,
            };
            Some(self.keys.prepare(owner, None, input)?)
        } else {
            None
        };
        let account = NewAccount {
            user: user.clone(),
            tenant: tenant.clone(),
            session: session.clone(),
            api_key: api_key.as_ref().map(|(key, _)| key.clone()),
        };
        match self.store.create_account(account).await {
            Ok(()) => {}
            Err(crate::store::StoreError::Conflict(_)) => return Err(CoreError::EmailTaken),
            Err(other) => return Err(other.into()),
        }
        self.audit(
            AuditEvent::new(AuditKind::Registered, &tenant.id, &user.id, now).session(&session.id),
        )
        .await;
        if let Some((key, _)) = &api_key {
            self.audit(
                AuditEvent::new(AuditKind::KeyCreated, &tenant.id, &user.id, now).key(&key.id),
            )
            .await;
        }
        let tokens = self.tokens_for(&session, refresh_token)?;
        Ok(Registered {
            user,
            tenant,
            tokens,
            api_key: api_key.map(|(key, secret)| (record_of(&key), secret)),
        })
    }

    /// Unknown email and wrong password take the same path and answer the same.
    #[tracing::instrument(skip_all)]
    pub async fn login(
        &self,
        email: &str,
        password: &Password,
        device: Option<&str>,
    ) -> CoreResult<IssuedTokens> {
        let user = match Email::parse(email) {
            Ok(email) => self.store.find_user_by_email(&email).await?,
            Err(_) => None,
        };
        let verified = self
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await?;
        let now = self.clock.now();
        let user = match user {
            Some(user) if verified => user,
            Some(user) => {
                // A wrong password for a real account: its tenant sees the attempt. Written
                // in the background, so that this answer takes as long as an unknown email's.
                audit::record_later(
                    Arc::clone(&self.store),
                    AuditEvent::new(AuditKind::LoginFailed, &user.tenant_id, &user.id, now)
                        .detail("wrong password"),
                );
                return Err(CoreError::Unauthenticated(AuthFailure::InvalidCredentials));
            }
            None => {
                // No account, so no tenant to show it to: only the log has it. Debug-formatted,
                // so a newline in the email cannot start a forged log line.
                tracing::info!(email = ?email, "login failed for an unknown email");
                return Err(CoreError::Unauthenticated(AuthFailure::InvalidCredentials));
            }
        };
        // Told only to whoever knows the password: anyone else gets `invalid_credentials`.
        if user.disabled_at.is_some() {
            self.audit(
                AuditEvent::new(AuditKind::LoginFailed, &user.tenant_id, &user.id, now)
                    .detail("account disabled"),
            )
            .await;
            return Err(CoreError::AccountDisabled);
        }
        self.upgrade_password_hash(&user, password).await;
        let (session, refresh_token) = self.new_session(&user.id, &user.tenant_id, device);
        self.store.create_session(session.clone()).await?;
        self.audit(
            AuditEvent::new(AuditKind::LoginSucceeded, &user.tenant_id, &user.id, now)
                .session(&session.id),
        )
        .await;
        self.tokens_for(&session, refresh_token)
    }

    /// Rehashes a password whose stored hash is weaker than the configured parameters, now
    /// that the password is known to be right. A failure only delays the upgrade to the next
    /// login: it never fails the login.
    async fn upgrade_password_hash(&self, user: &UserRecord, password: &Password) {
        if !self.hasher.needs_rehash(&user.password_hash) {
            return;
        }
        let hash = match self.hasher.hash(password).await {
            Ok(hash) => hash,
            // The hashing queue is full (a login storm): the next login upgrades it.
            Err(error) => {
                tracing::debug!(user_id = %user.id, %error, "password hash upgrade postponed");
                return;
            }
        };
        match self
            .store
            .upgrade_password_hash(&user.id, &user.password_hash, &hash)
            .await
        {
            Ok(true) => tracing::info!(user_id = %user.id, "password hash upgraded"),
            // The password changed meanwhile: the new hash is already current.
            Ok(false) => {}
            Err(error) => {
                tracing::warn!(user_id = %user.id, %error, "upgrading a password hash failed")
            }
        }
    }

    /// Spends `presented` and returns a new pair. A token spent longer ago than the grace window
    /// revokes its whole session: someone is replaying it.
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, presented: &RefreshToken) -> CoreResult<IssuedTokens> {
        let invalid = || CoreError::Unauthenticated(AuthFailure::InvalidToken);
        let hash = sha256(presented.expose());
        let (token, session) = self
            .store
            .find_refresh_token(&hash)
            .await?
            .ok_or_else(invalid)?;
        let now = self.clock.now();
        if session.revoked_at.is_some() || session.expires_at <= now {
            return Err(invalid());
        }
        if let Some(spent_at) = token.spent_at {
            if now.seconds() - spent_at.seconds() > self.config.refresh_reuse_grace_seconds {
                tracing::warn!(session_id = %session.id, user_id = %session.user_id, "refresh token reuse detected; session revoked");
                self.store.revoke_session(&session.id, now).await?;
                self.audit(
                    AuditEvent::new(
                        AuditKind::RefreshReuseDetected,
                        &session.tenant_id,
                        &session.user_id,
                        now,
                    )
                    .session(&session.id)
                    .detail("session revoked"),
                )
                .await;
                let owner = Owner {
                    user_id: session.user_id.clone(),
                    tenant_id: session.tenant_id.clone(),
                };
                self.keys
                    .emit(
                        &owner,
                        crate::webhooks::EventType::SessionReuseDetected,
                        serde_json::json!({
                            "session_id": session.id.as_str(),
                            "tenant_id": session.tenant_id.as_str(),
                            "user_id": session.user_id.as_str(),
                        }),
                    )
                    .await;
            }
            return Err(invalid());
        }
        let fresh = RefreshToken::generate();
        if !self
            .store
            .rotate_refresh_token(&hash, &sha256(fresh.expose()), &session.id, now)
            .await?
        {
            // Another request spent it a moment ago: that one won.
            return Err(invalid());
        }
        let access_token = AccessToken::new(self.signer.issue(
            &session.user_id,
            &session.tenant_id,
            &session.id,
        )?);
        Ok(IssuedTokens {
            access_token,
            refresh_token: fresh,
            expires_in: self.signer.ttl_seconds(),
        })
    }

    /// The caller's live sessions, most recently used first.
    pub async fn sessions(&self, auth: &Authenticated) -> CoreResult<Vec<SessionSummary>> {
        Ok(self
            .store
            .list_sessions(&auth.user_id, self.clock.now())
            .await?)
    }

    /// Ends one of the caller's own sessions; another user's, or an ended one, is `NotFound`.
    pub async fn end_session(&self, auth: &Authenticated, id: &SessionId) -> CoreResult<()> {
        if self
            .store
            .revoke_user_session(&auth.user_id, id, self.clock.now())
            .await?
        {
            self.audit(
                AuditEvent::new(
                    AuditKind::Logout,
                    &auth.tenant_id,
                    &auth.user_id,
                    self.clock.now(),
                )
                .session(id)
                .detail("one session, ended from another"),
            )
            .await;
            Ok(())
        } else {
            Err(CoreError::NotFound)
        }
    }

    pub async fn logout(&self, auth: &Authenticated, all: bool) -> CoreResult<()> {
        let now = self.clock.now();
        if all {
            self.store.revoke_user_sessions(&auth.user_id, now).await?;
        } else {
            self.store.revoke_session(&auth.session_id, now).await?;
        }
        let event = AuditEvent::new(AuditKind::Logout, &auth.tenant_id, &auth.user_id, now)
            .session(&auth.session_id);
        self.audit(if all {
            event.detail("all sessions")
        } else {
            event
        })
        .await;
        Ok(())
    }

    /// Verifies the token, then that its session is still live, so logout takes effect on the
    /// next request.
    #[tracing::instrument(skip_all)]
    pub async fn authenticate_access_token(&self, token: &str) -> CoreResult<Authenticated> {
        let claims = self
            .signer
            .verify(token)
            .await
            .map_err(CoreError::Unauthenticated)?;
        let invalid = || CoreError::Unauthenticated(AuthFailure::InvalidToken);
        let session = self
            .store
            .find_session(&SessionId::from_stored(claims.sid))
            .await?
            .ok_or_else(invalid)?;
        if session.revoked_at.is_some()
            || session.expires_at <= self.clock.now()
            || session.user_id.as_str() != claims.sub
            || session.tenant_id.as_str() != claims.tid
        {
            return Err(invalid());
        }
        Ok(Authenticated {
            user_id: session.user_id,
            tenant_id: session.tenant_id,
            session_id: session.id,
        })
    }

    /// Changes the password and revokes every other session of the user.
    #[tracing::instrument(skip_all)]
    pub async fn change_password(
        &self,
        auth: &Authenticated,
        current: &Password,
        new: String,
    ) -> CoreResult<()> {
        let user = self
            .store
            .find_user(&auth.user_id)
            .await?
            .ok_or(CoreError::NotFound)?;
        let new = Password::parse(new).map_err(|m| CoreError::field("new_password", m));
        if !self
            .hasher
            .verify(current, Some(&user.password_hash))
            .await?
        {
            return Err(CoreError::field("current_password", "is incorrect"));
        }
        let new = new?;
        let hash = self.hasher.hash(&new).await?;
        self.store
            .change_password(&user.id, &hash, &auth.session_id, self.clock.now())
            .await?;
        self.audit(
            AuditEvent::new(
                AuditKind::PasswordChanged,
                &auth.tenant_id,
                &auth.user_id,
                self.clock.now(),
            )
            .session(&auth.session_id)
            .detail("other sessions revoked"),
        )
        .await;
        Ok(())
    }

    /// The user and their tenant as shown to them: read once, then from memory (`profiles.rs`
    /// says why that is never stale). The caller's credential is checked before, every time.
    pub async fn profile(&self, user: &UserId, tenant: &TenantId) -> CoreResult<Arc<Profile>> {
        if let Some(profile) = self.profiles.get(user, tenant) {
            return Ok(profile);
        }
        let (user, tenant) = self
            .store
            .find_profile(user, tenant)
            .await?
            .ok_or(CoreError::NotFound)?;
        let profile = Arc::new(Profile::new(&user, tenant));
        self.profiles.remember(Arc::clone(&profile));
        Ok(profile)
    }

    /// Records an audit event after the change it describes (see `audit.rs`).
    async fn audit(&self, event: AuditEvent) {
        audit::record(&*self.store, event).await;
    }

    /// One page of the tenant's audit log, newest first; `NotFound` for a cursor that is not
    /// an event of this tenant.
    pub async fn audit_page(
        &self,
        tenant: &TenantId,
        cursor: Option<&str>,
        limit: u32,
    ) -> CoreResult<audit::AuditPage> {
        audit::page(&*self.store, tenant, cursor, limit)
            .await?
            .ok_or(CoreError::NotFound)
    }

    fn new_session(
        &self,
        user: &UserId,
        tenant: &TenantId,
        device: Option<&str>,
    ) -> (NewSession, RefreshToken) {
        let now = self.clock.now();
        let refresh_token = RefreshToken::generate();
        let session = NewSession {
            id: SessionId::generate(),
            user_id: user.clone(),
            tenant_id: tenant.clone(),
            refresh_token_hash: sha256(refresh_token.expose()),
            created_at: now,
            expires_at: now.plus_days(self.config.refresh_token_ttl_days),
            device: device.and_then(device_label),
        };
        (session, refresh_token)
    }

    fn tokens_for(
        &self,
        session: &NewSession,
        refresh_token: RefreshToken,
    ) -> CoreResult<IssuedTokens> {
        Ok(IssuedTokens {
            access_token: AccessToken::new(self.signer.issue(
                &session.user_id,
                &session.tenant_id,
                &session.id,
            )?),
            refresh_token,
            expires_in: self.signer.ttl_seconds(),
        })
    }
}

/// A short, readable name for what opened a session, from its `User-Agent`: `Chrome on
/// Linux`, `Firefox on macOS`, or the first product token (`keyward-cli/0.1.0`, `curl/8.5.0`).
/// Written by hand: a full user-agent parser (and its database) is far more than a label on
/// the account page needs. Only printable ASCII is kept, at most 100 characters.
pub fn device_label(user_agent: &str) -> Option<String> {
    let agent: String = user_agent
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .collect();
    let agent = agent.trim();
    if agent.is_empty() {
        return None;
    }
    const BROWSERS: [(&str, &str); 7] = [
        ("Edg/", "Edge"),
        ("OPR/", "Opera"),
        ("Firefox/", "Firefox"),
        ("Chromium/", "Chromium"),
        ("Chrome/", "Chrome"),
        ("CriOS/", "Chrome"),
        ("Safari/", "Safari"),
    ];
    const SYSTEMS: [(&str, &str); 7] = [
        ("Android", "Android"),
        ("iPhone", "iOS"),
        ("iPad", "iPadOS"),
        ("CrOS", "ChromeOS"),
        ("Windows", "Windows"),
        ("Mac OS X", "macOS"),
        ("Linux", "Linux"),
    ];
    let browser = BROWSERS
        .iter()
        .find(|(marker, _)| agent.contains(marker))
        .map(|(_, name)| *name);
    let system = SYSTEMS
        .iter()
        .find(|(marker, _)| agent.contains(marker))
        .map(|(_, name)| *name);
    let label = match (browser, system) {
        (Some(browser), Some(system)) => format!("{browser} on {system}"),
        (Some(browser), None) => browser.to_owned(),
        _ => agent.split(' ').next().unwrap_or(agent).to_owned(),
    };
    Some(label.chars().take(100).collect())
}

#[cfg(test)]
mod device_tests {
    use super::device_label;

    #[test]
    fn devices_are_named_briefly() {
        let chrome = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
                      HeadlessChrome/156.0.0.0 Safari/537.36";
        assert_eq!(device_label(chrome).as_deref(), Some("Chrome on Linux"));
        let firefox = "Mozilla/5.0 (Macintosh; Intel Mac OS X 14.1; rv:130.0) Gecko/20100101 \
                       Firefox/130.0";
        assert_eq!(device_label(firefox).as_deref(), Some("Firefox on macOS"));
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36 Edg/120.0";
        assert_eq!(device_label(edge).as_deref(), Some("Edge on Windows"));
        assert_eq!(
            device_label("keyward-cli/0.1.0").as_deref(),
            Some("keyward-cli/0.1.0")
        );
        assert_eq!(
            device_label("curl/8.5.0 extra").as_deref(),
            Some("curl/8.5.0")
        );
        assert_eq!(device_label("  \u{7}\n "), None);
        assert_eq!(device_label(&"x".repeat(300)).map(|l| l.len()), Some(100));
    }
}
