//! PostgreSQL access for the agent: connection settings from `agent.toml`, the password read
//! from its file, connections (tokio-postgres) and the environment the client tools
//! (`pg_dump`, `pg_restore`, `psql`) need. The password is never logged or put in arguments.

use std::path::PathBuf;

use crate::config::PostgresConfig;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot read the PostgreSQL password file {path}: {source}")]
    PasswordFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot connect to PostgreSQL at {host}:{port} as {user} (database {database}): {message}; is PostgreSQL running?")]
    Connect {
        host: String,
        port: u16,
        user: String,
        database: String,
        message: String,
        /// The server refused for a reason a database swap causes (see `is_transient`).
        transient: bool,
    },
    #[error("database {database}: {}", describe(.source))]
    Query {
        database: String,
        source: tokio_postgres::Error,
    },
}

impl DbError {
    /// True for the failures a database swap causes (its sessions terminated, its name
    /// briefly gone, the database in use): they pass once the swap is over.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Connect { transient, .. } => *transient,
            DbError::Query { source, .. } => swap_code(source.code()),
            DbError::PasswordFile { .. } => false,
        }
    }
}

/// The SQLSTATEs a database swap causes: sessions terminated by an administrator, the
/// name briefly gone, the database in use.
fn swap_code(code: Option<&tokio_postgres::error::SqlState>) -> bool {
    use tokio_postgres::error::SqlState;
    code.is_some_and(|c| {
        [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::INVALID_CATALOG_NAME,
            SqlState::OBJECT_IN_USE,
        ]
        .contains(c)
    })
}

/// What went wrong, with the server's own message and SQLSTATE when there is one
/// (tokio-postgres alone says only "db error").
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(cause) = source {
                text.push_str(": ");
                text.push_str(&cause.to_string());
                source = cause.source();
            }
            text
        }
    }
}

/// Connection settings with the password loaded.
#[derive(Clone)]
pub struct Pg {
    pub host: String,
    pub port: u16,
    pub user: String,
    password: Option<String>,
}

impl std::fmt::Debug for Pg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pg")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Pg {
    pub fn from_config(config: &PostgresConfig) -> Result<Self, DbError> {
        let password = match &config.password_file {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .map_err(|source| DbError::PasswordFile {
                        path: path.clone(),
                        source,
                    })?
                    .trim_end_matches(['\n', '\r'])
                    .to_owned(),
            ),
            None => None,
        };
        Ok(Self {
            host: config.host.clone(),
            port: config.port,
            user: config.user.clone(),
            password,
        })
    }

    /// Opens a connection to `database`; the connection task ends with the client.
    pub async fn connect(&self, database: &str) -> Result<tokio_postgres::Client, DbError> {
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&self.host)
            .port(self.port)
            .user(&self.user)
            .dbname(database)
            .application_name("ocore-agent")
            .connect_timeout(std::time::Duration::from_secs(10));
        if let Some(p) = &self.password {
            cfg.password(p);
        }
        let (client, connection) =
            cfg.connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| DbError::Connect {
                    host: self.host.clone(),
                    port: self.port,
                    user: self.user.clone(),
                    database: database.to_owned(),
                    message: describe(&e),
                    transient: swap_code(e.code()),
                })?;
        tokio::spawn(async move {
            // Ends when the client is dropped; errors surface on the client's next call.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// The password, for handing to a container's environment.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// Whether `database` exists on the server.
    pub async fn database_exists(&self, database: &str) -> Result<bool, DbError> {
        let client = self.connect("postgres").await?;
        let row = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&database])
            .await
            .map_err(|source| DbError::Query {
                database: "postgres".to_owned(),
                source,
            })?;
        Ok(row.is_some())
    }

    /// Drops `database` (its sessions are terminated first); absent is fine.
    pub async fn drop_database(&self, database: &str) -> Result<(), DbError> {
        let client = self.connect("postgres").await?;
        client
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                quote_ident(database)
            ))
            .await
            .map_err(|source| DbError::Query {
                database: database.to_owned(),
                source,
            })
    }

    /// Environment for libpq client programs.
    pub fn tool_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("PGHOST".to_owned(), self.host.clone()),
            ("PGPORT".to_owned(), self.port.to_string()),
            ("PGUSER".to_owned(), self.user.clone()),
        ];
        if let Some(p) = &self.password {
            env.push(("PGPASSWORD".to_owned(), p.clone()));
        }
        env
    }
}

/// Quotes an identifier for SQL (database names are validated by the config, but quoting
/// keeps statements correct for every allowed character such as '-' and '.').
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("shop-prod.v17"), "\"shop-prod.v17\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn password_is_not_in_debug_output() {
        let pg = Pg {
            host: "h".into(),
            port: 1,
            user: "u".into(),
            password: Some("s3cret".into()),
        };
        assert!(!format!("{pg:?}").contains("s3cret"));
        assert!(pg
            .tool_env()
            .contains(&("PGPASSWORD".to_owned(), "s3cret".to_owned())));
    }

    #[test]
    fn a_database_swap_is_transient_other_failures_are_not() {
        use tokio_postgres::error::SqlState;
        let connect = |code: Option<SqlState>| DbError::Connect {
            host: "h".into(),
            port: 1,
            user: "u".into(),
            database: "shop".into(),
            message: "m".into(),
            transient: swap_code(code.as_ref()),
        };
        for code in [
            SqlState::ADMIN_SHUTDOWN,
            SqlState::INVALID_CATALOG_NAME,
            SqlState::OBJECT_IN_USE,
        ] {
            assert!(connect(Some(code.clone())).is_transient(), "{code:?}");
            let e = crate::snapshot::PgError::Db(connect(Some(code)));
            assert_eq!(e.kind(), crate::snapshot::ErrorKind::Busy);
        }
        for code in [
            Some(SqlState::INVALID_PASSWORD),
            Some(SqlState::TOO_MANY_CONNECTIONS),
            None,
        ] {
            assert!(!connect(code).is_transient());
        }
    }
}
