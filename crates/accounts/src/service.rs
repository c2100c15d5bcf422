//! The gRPC face of [`Accounts`]: `chat.accounts.v1.Accounts`. Requests are turned into
//! calls of the accounts logic, its results into replies, and its errors into statuses
//! in one place ([`status`]), following the table in `proto/accounts.proto`.

use std::sync::Arc;

use chat_proto::accounts::accounts_server::Accounts as AccountsRpc;
use chat_proto::accounts::error_detail::Reason;
use chat_proto::accounts::{
    AuthReply, BearerRequest, ChangePasswordRequest, DeleteAccountRequest, Empty, ErrorDetail,
    GetUsersRequest, LogInRequest, LogOutRequest, RefreshRequest, SearchUsersRequest,
    SignUpRequest, SigningKey, SigningKeysReply, UpdateDisplayNameRequest, User, UserReply,
    UsersReply,
};
use tonic::{Request, Response, Status};

use crate::accounts::{Accounts, Caller, Issued, client_addr};
use crate::error::{AccountsError, whole_secs};
use crate::password::Password;
use crate::store::UserRecord;
use crate::tokens::Published;

/// The one place where accounts errors become gRPC statuses.
pub fn status(e: AccountsError) -> Status {
    let message = e.to_string();
    let detail = |reason| ErrorDetail::new(reason, 0).into_status(message.clone());
    match e {
        AccountsError::BadRequest(_) => detail(Reason::BadRequest),
        AccountsError::WeakPassword(_) => detail(Reason::WeakPassword),
        AccountsError::UsernameTaken => detail(Reason::UsernameTaken),
        AccountsError::InvalidCredentials => detail(Reason::InvalidCredentials),
        AccountsError::InvalidToken => detail(Reason::InvalidToken),
        AccountsError::RateLimited(wait) => {
            ErrorDetail::new(Reason::RateLimited, whole_secs(wait)).into_status(message)
        }
        AccountsError::Unavailable { retry_after, .. } => {
            tracing::warn!(error = %message, "accounts unavailable");
            ErrorDetail::new(Reason::Unavailable, whole_secs(retry_after)).into_status(message)
        }
        AccountsError::Internal(_) => {
            tracing::error!(error = %message, "accounts failure");
            Status::internal(message)
        }
    }
}

fn user(record: &UserRecord) -> User {
    User {
        id: record.id.to_string(),
        username: record.username.clone(),
        display_name: record.display_name.clone(),
        created_at_ms: record.created_at,
    }
}

fn auth_reply(issued: Issued) -> Response<AuthReply> {
    let secs = |d: std::time::Duration| u32::try_from(d.as_secs()).unwrap_or(u32::MAX);
    Response::new(AuthReply {
        user: Some(user(&issued.user)),
        access_token: issued.access_token,
        expires_in: secs(issued.expires_in),
        refresh_token: issued.refresh_token,
        refresh_expires_in: secs(issued.refresh_expires_in),
    })
}

fn keys_reply(keys: Vec<Published>) -> Response<SigningKeysReply> {
    Response::new(SigningKeysReply {
        keys: keys
            .into_iter()
            .map(|k| SigningKey {
                kid: k.key.kid,
                alg: k.key.alg,
                public_key: k.key.key,
                active: k.active,
            })
            .collect(),
    })
}

/// Implements the generated `Accounts` service on the accounts logic.
#[derive(Debug, Clone)]
pub struct AccountsService {
    accounts: Arc<Accounts>,
}

impl AccountsService {
    /// Serves `accounts`.
    pub fn new(accounts: Arc<Accounts>) -> Self {
        Self { accounts }
    }

    async fn caller(&self, access_token: &str) -> Result<Caller, Status> {
        self.accounts
            .authenticate(access_token)
            .await
            .map_err(status)
    }
}

#[tonic::async_trait]
impl AccountsRpc for AccountsService {
    async fn sign_up(
        &self,
        request: Request<SignUpRequest>,
    ) -> Result<Response<AuthReply>, Status> {
        let req = request.into_inner();
        let client = client_addr(&req.client_addr).map_err(status)?;
        let issued = self
            .accounts
            .sign_up(
                &req.username,
                &Password::new(req.password),
                &req.display_name,
                client,
            )
            .await
            .map_err(status)?;
        Ok(auth_reply(issued))
    }

    async fn log_in(&self, request: Request<LogInRequest>) -> Result<Response<AuthReply>, Status> {
        let req = request.into_inner();
        let client = client_addr(&req.client_addr).map_err(status)?;
        let issued = self
            .accounts
            .log_in(&req.username, &Password::new(req.password), client)
            .await
            .map_err(status)?;
        Ok(auth_reply(issued))
    }

    async fn refresh(
        &self,
        request: Request<RefreshRequest>,
    ) -> Result<Response<AuthReply>, Status> {
        let issued = self
            .accounts
            .refresh(&request.get_ref().refresh_token)
            .await
            .map_err(status)?;
        Ok(auth_reply(issued))
    }

    async fn log_out(&self, request: Request<LogOutRequest>) -> Result<Response<Empty>, Status> {
        let req = request.get_ref();
        let caller = self.caller(&req.access_token).await?;
        self.accounts
            .log_out(&caller, &req.refresh_token)
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn log_out_all(
        &self,
        request: Request<BearerRequest>,
    ) -> Result<Response<Empty>, Status> {
        let caller = self.caller(&request.get_ref().access_token).await?;
        self.accounts.log_out_all(&caller).await.map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn change_password(
        &self,
        request: Request<ChangePasswordRequest>,
    ) -> Result<Response<Empty>, Status> {
        let req = request.into_inner();
        let caller = self.caller(&req.access_token).await?;
        self.accounts
            .change_password(
                &caller,
                &Password::new(req.current_password),
                &Password::new(req.new_password),
            )
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn get_user(
        &self,
        request: Request<BearerRequest>,
    ) -> Result<Response<UserReply>, Status> {
        let caller = self.caller(&request.get_ref().access_token).await?;
        Ok(Response::new(UserReply {
            user: Some(user(&caller.user)),
        }))
    }

    async fn update_display_name(
        &self,
        request: Request<UpdateDisplayNameRequest>,
    ) -> Result<Response<UserReply>, Status> {
        let req = request.get_ref();
        let caller = self.caller(&req.access_token).await?;
        let renamed = self
            .accounts
            .rename(&caller, &req.display_name)
            .await
            .map_err(status)?;
        Ok(Response::new(UserReply {
            user: Some(user(&renamed)),
        }))
    }

    async fn delete_account(
        &self,
        request: Request<DeleteAccountRequest>,
    ) -> Result<Response<Empty>, Status> {
        let req = request.into_inner();
        let caller = self.caller(&req.access_token).await?;
        self.accounts
            .delete(&caller, &Password::new(req.password))
            .await
            .map_err(status)?;
        Ok(Response::new(Empty {}))
    }

    async fn get_users(
        &self,
        request: Request<GetUsersRequest>,
    ) -> Result<Response<UsersReply>, Status> {
        let req = request.get_ref();
        self.caller(&req.access_token).await?;
        let found = self.accounts.users(&req.ids).await.map_err(status)?;
        Ok(Response::new(UsersReply {
            users: found.iter().map(user).collect(),
        }))
    }

    async fn search_users(
        &self,
        request: Request<SearchUsersRequest>,
    ) -> Result<Response<UsersReply>, Status> {
        let req = request.get_ref();
        self.caller(&req.access_token).await?;
        let found = self
            .accounts
            .search(&req.query, req.limit)
            .await
            .map_err(status)?;
        Ok(Response::new(UsersReply {
            users: found.iter().map(user).collect(),
        }))
    }

    async fn signing_keys(&self, _: Request<Empty>) -> Result<Response<SigningKeysReply>, Status> {
        Ok(keys_reply(
            self.accounts.signing_keys().await.map_err(status)?,
        ))
    }

    async fn rotate_signing_key(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<SigningKeysReply>, Status> {
        Ok(keys_reply(
            self.accounts.rotate_signing_key().await.map_err(status)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tonic::Code;

    use super::*;

    #[test]
    fn errors_map_to_codes_and_reasons() {
        let cases = [
            (
                AccountsError::BadRequest("x".into()),
                Code::InvalidArgument,
                Some((Reason::BadRequest, 0)),
            ),
            (
                AccountsError::WeakPassword("x".into()),
                Code::InvalidArgument,
                Some((Reason::WeakPassword, 0)),
            ),
            (
                AccountsError::UsernameTaken,
                Code::AlreadyExists,
                Some((Reason::UsernameTaken, 0)),
            ),
            (
                AccountsError::InvalidCredentials,
                Code::Unauthenticated,
                Some((Reason::InvalidCredentials, 0)),
            ),
            (
                AccountsError::InvalidToken,
                Code::Unauthenticated,
                Some((Reason::InvalidToken, 0)),
            ),
            (
                AccountsError::RateLimited(Duration::from_millis(1500)),
                Code::ResourceExhausted,
                Some((Reason::RateLimited, 2)),
            ),
            (
                AccountsError::Unavailable {
                    message: "busy".into(),
                    retry_after: Duration::from_secs(1),
                },
                Code::Unavailable,
                Some((Reason::Unavailable, 1)),
            ),
            (AccountsError::Internal("bug".into()), Code::Internal, None),
        ];
        for (error, code, detail) in cases {
            let what = format!("{error:?}");
            let s = status(error);
            assert_eq!(s.code(), code, "{what}");
            let got = ErrorDetail::from_status(&s).map(|d| (d.reason(), d.retry_after_secs));
            assert_eq!(got, detail, "{what}");
        }
    }
}
