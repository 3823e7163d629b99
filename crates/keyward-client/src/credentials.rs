//! [`Credentials`]: what a client presents, and [`CredentialsFile`]: where the CLI and any
//! other program keep them between runs (SPEC §5).

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use keyward_proto::{Secret, TokenPair};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The file's name inside the config directory.
pub const CREDENTIALS_FILE_NAME: &str = "credentials.json";

/// The credentials a [`Client`](crate::Client) holds.
///
/// Its fields are those of the CLI's `credentials.json` (SPEC §5) minus `url`, so saving a
/// client's state is [`Client::credentials`](crate::Client::credentials) and restoring it is
/// [`ClientBuilder::credentials`](crate::ClientBuilder::credentials). Every field is a
/// [`Secret`]: `Debug` shows `[redacted]`, never the value.
///
/// A request presents the access token when there is one, else the API key, as
/// `Authorization: Bearer`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Credentials {
    /// A long-lived API key (`kw_…`).
    pub api_key: Option<Secret>,
    /// A session's short-lived access token (a JWT).
    pub access_token: Option<Secret>,
    /// The session's refresh token: spent by [`Client::refresh`](crate::Client::refresh) for a
    /// new pair, and on `token_expired`.
    pub refresh_token: Option<Secret>,
}

impl Credentials {
    /// The credential a request presents: the access token, else the API key.
    pub(crate) fn bearer(&self) -> Option<Bearer> {
        match (&self.access_token, &self.api_key) {
            (Some(token), _) => Some(Bearer::AccessToken(token.clone())),
            (None, Some(key)) => Some(Bearer::ApiKey(key.clone())),
            (None, None) => None,
        }
    }

    /// Keeps a freshly issued pair, replacing the previous one.
    pub(crate) fn store_tokens(&mut self, tokens: &TokenPair) {
        self.access_token = Some(tokens.access_token.clone());
        self.refresh_token = Some(tokens.refresh_token.clone());
    }
}

/// The contents of `credentials.json`: the server's URL and the [`Credentials`] for it.
///
/// Every field is optional. Unknown fields are ignored, so a file written by a newer version
/// still loads. `Debug` shows no secret.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialsFile {
    /// The base URL the credentials were issued by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A long-lived API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// A session's access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<Secret>,
    /// The session's refresh token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<Secret>,
}

impl CredentialsFile {
    /// The file for `url` holding `credentials`.
    pub fn new(url: Option<String>, credentials: Credentials) -> Self {
        Self {
            url,
            api_key: credentials.api_key,
            access_token: credentials.access_token,
            refresh_token: credentials.refresh_token,
        }
    }

    /// The credentials it holds, without the URL.
    pub fn credentials(&self) -> Credentials {
        Credentials {
            api_key: self.api_key.clone(),
            access_token: self.access_token.clone(),
            refresh_token: self.refresh_token.clone(),
        }
    }

    /// Whether these credentials may be sent to the server at `base_url`: the file names no
    /// URL, or the same one (compared once parsed, a trailing slash aside). Credentials
    /// issued by one server are never sent to another.
    pub fn is_for(&self, base_url: &str) -> bool {
        let normal = |raw: &str| {
            reqwest::Url::parse(raw.trim())
                .map(|url| url.as_str().trim_end_matches('/').to_owned())
                .unwrap_or_else(|_| raw.trim().trim_end_matches('/').to_owned())
        };
        self.url
            .as_deref()
            .is_none_or(|stored| normal(stored) == normal(base_url))
    }

    /// The default location: `$KEYWARD_CONFIG_DIR/credentials.json`, else
    /// `$XDG_CONFIG_HOME/keyward/credentials.json`, else `~/.config/keyward/credentials.json`.
    /// `None` when none of these variables is set (no home directory).
    pub fn default_path() -> Option<PathBuf> {
        Self::path_from(|name| std::env::var_os(name).map(PathBuf::from))
    }

    pub(crate) fn path_from(lookup: impl Fn(&str) -> Option<PathBuf>) -> Option<PathBuf> {
        let set = |name: &str| lookup(name).filter(|value| !value.as_os_str().is_empty());
        let dir = set("KEYWARD_CONFIG_DIR")
            .or_else(|| set("XDG_CONFIG_HOME").map(|dir| dir.join("keyward")))
            .or_else(|| set("HOME").map(|home| home.join(".config").join("keyward")))?;
        Some(dir.join(CREDENTIALS_FILE_NAME))
    }

    /// Reads the file at `path`. A missing file is `Ok(None)`: no credentials. A file that
    /// cannot be read or parsed is an error naming the path.
    pub fn load(path: &Path) -> Result<Option<Self>> {
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(Error::CredentialsFile {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        let corrupt = |source| Error::CorruptCredentialsFile {
            path: path.to_owned(),
            source,
        };
        // An object, not any JSON serde could map onto the struct (an array would do).
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(corrupt)?;
        if !value.is_object() {
            return Err(corrupt(serde::de::Error::custom("expected a JSON object")));
        }
        serde_json::from_value(value).map(Some).map_err(corrupt)
    }

    /// Writes the file at `path`, readable by its owner only (mode 0600), creating its
    /// directory (mode 0700) if needed.
    ///
    /// Atomic: the JSON goes to a temporary file in the same directory, created with mode
    /// 0600, synced, then renamed over `path`. A reader sees the old file or the new one,
    /// never a mix, and a crash leaves at worst a stray temporary file, not a torn
    /// credentials file.
    pub fn save(&self, path: &Path) -> Result<()> {
        let io_error = |source| Error::CredentialsFile {
            path: path.to_owned(),
            source,
        };
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        create_private_dir(dir).map_err(io_error)?;
        let mut json = serde_json::to_vec_pretty(self).map_err(|error| io_error(error.into()))?;
        json.push(b'\n');
        let temp = temp_path(path);
        let written = write_private(&temp, &json).and_then(|()| fs::rename(&temp, path));
        if let Err(error) = written {
            let _ = fs::remove_file(&temp);
            return Err(io_error(error));
        }
        // Make the rename itself durable. Not every platform can sync a directory.
        if let Ok(dir) = fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    /// Deletes the file at `path`; a missing file is fine.
    pub fn remove(path: &Path) -> Result<()> {
        match fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(Error::CredentialsFile {
                path: path.to_owned(),
                source,
            }),
        }
    }
}

/// `.credentials.json.<pid>.<n>.tmp` beside `path`: unique within the process and across
/// processes, so two writers never share a temporary file.
fn temp_path(path: &Path) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| CREDENTIALS_FILE_NAME.into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{n}.tmp", std::process::id()))
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Creates `path` (it must not exist) with mode 0600 from the start, so the secret is never
/// readable by others even for an instant, and syncs it.
fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// A credential as sent on one request.
pub(crate) enum Bearer {
    AccessToken(Secret),
    ApiKey(Secret),
}

impl Bearer {
    pub(crate) fn expose(&self) -> &str {
        match self {
            Self::AccessToken(secret) | Self::ApiKey(secret) => secret.expose(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_token_wins_over_the_api_key() {
        let mut credentials = Credentials {
            api_key: Some(Secret::new("kw_key")),
            ..Credentials::default()
        };
        assert!(matches!(credentials.bearer(), Some(Bearer::ApiKey(_))));
        credentials.access_token = Some(Secret::new("a.b.c"));
        let bearer = credentials.bearer();
        assert!(matches!(bearer, Some(Bearer::AccessToken(_))));
        assert_eq!(
            bearer.map(|b| b.expose().to_owned()).as_deref(),
            Some("a.b.c")
        );
        assert!(Credentials::default().bearer().is_none());
    }

    #[test]
    fn debug_shows_no_secret() {
        let credentials = Credentials {
            api_key: Some(Secret::new("kw_topsecretkey")),
            access_token: Some(Secret::new("header.payload.signature")),
            refresh_token: Some(Secret::new("refreshvalue")),
        };
        let debug = format!("{credentials:?}");
        for secret in ["topsecret", "payload", "refreshvalue"] {
            assert!(!debug.contains(secret), "{debug}");
        }
        assert!(debug.contains("[redacted]"), "{debug}");
    }

    fn sample() -> CredentialsFile {
        CredentialsFile {
            url: Some("http://127.0.0.1:7777".into()),
            api_key: None,
            access_token: Some(Secret::new("header.payload.signature")),
            refresh_token: Some(Secret::new("refreshvalue")),
        }
    }

    #[test]
    fn the_path_follows_config_dir_then_xdg_then_home() {
        let path = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            CredentialsFile::path_from(|name| {
                vars.iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| PathBuf::from(v))
            })
        };
        let all = [
            ("KEYWARD_CONFIG_DIR", "/a"),
            ("XDG_CONFIG_HOME", "/b"),
            ("HOME", "/c"),
        ];
        assert_eq!(path(&all), Some(PathBuf::from("/a/credentials.json")));
        assert_eq!(
            path(&all[1..]),
            Some(PathBuf::from("/b/keyward/credentials.json"))
        );
        assert_eq!(
            path(&[("KEYWARD_CONFIG_DIR", ""), ("HOME", "/c")]),
            Some(PathBuf::from("/c/.config/keyward/credentials.json"))
        );
        assert_eq!(path(&[]), None);
    }

    #[test]
    fn credentials_belong_to_their_url() {
        let file = sample();
        assert!(file.is_for("http://127.0.0.1:7777"));
        assert!(file.is_for("http://127.0.0.1:7777/"));
        assert!(file.is_for("HTTP://127.0.0.1:7777"));
        assert!(!file.is_for("http://127.0.0.1:7778"));
        assert!(!file.is_for("https://127.0.0.1:7777"));
        assert!(CredentialsFile::default().is_for("https://anywhere.example.com"));
    }

    #[test]
    fn a_saved_file_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested").join("credentials.json");
        sample().save(&path).unwrap();
        assert_eq!(CredentialsFile::load(&path).unwrap(), Some(sample()));
        let json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["url"], "http://127.0.0.1:7777");
        assert_eq!(json["refresh_token"], "refreshvalue");
        assert!(json.get("api_key").is_none(), "{json}");
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config").join("credentials.json");
        sample().save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700, "{dir_mode:o}");

        // Replacing a file that was made world-readable by hand tightens it again.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        sample().save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }

    #[test]
    fn a_save_replaces_the_whole_file_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.json");
        // A longer previous content: a write in place would leave its tail behind.
        let mut long = sample();
        long.api_key = Some(Secret::new("kw_".to_owned() + &"x".repeat(500)));
        long.save(&path).unwrap();
        let short = CredentialsFile {
            url: Some("http://h".into()),
            api_key: Some(Secret::new("kw_short")),
            ..CredentialsFile::default()
        };
        short.save(&path).unwrap();
        assert_eq!(CredentialsFile::load(&path).unwrap(), Some(short));
        let names: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["credentials.json".to_owned()]);
    }

    #[test]
    fn a_missing_file_is_no_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.json");
        assert_eq!(CredentialsFile::load(&path).unwrap(), None);
        CredentialsFile::remove(&path).unwrap();
        sample().save(&path).unwrap();
        CredentialsFile::remove(&path).unwrap();
        assert!(!path.exists());
    }

    #[test]
    fn a_corrupt_file_is_an_error_that_names_it_and_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.json");
        for corrupt in ["{not json", "[]", r#"{"api_key": 42}"#, ""] {
            fs::write(&path, corrupt).unwrap();
            let error = CredentialsFile::load(&path).unwrap_err();
            assert!(
                matches!(error, Error::CorruptCredentialsFile { .. }),
                "{error:?}"
            );
            let message = error.to_string();
            assert!(message.contains(&path.display().to_string()), "{message}");
            assert!(message.contains("keyward login"), "{message}");
        }
    }

    #[test]
    fn an_unreadable_path_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the file should be.
        let path = dir.path().join("credentials.json");
        fs::create_dir(&path).unwrap();
        let error = CredentialsFile::load(&path).unwrap_err();
        assert!(matches!(error, Error::CredentialsFile { .. }), "{error:?}");
        assert!(error.to_string().contains(&path.display().to_string()));
        let error = sample().save(&path).unwrap_err();
        assert!(error.to_string().contains(&path.display().to_string()));
    }
}
