//! A throw-away Postgres cluster from the test kit (`tests/kit`: the
//! version `$HOOP_PG_VERSION` names, else 15), every login trusted,
//! stopped and removed on drop.

use hoop_testkit::Auth;

pub struct Cluster {
    kit: hoop_testkit::Cluster,
    pub port: u16,
}

impl Cluster {
    pub fn start() -> Cluster {
        let kit = hoop_testkit::Cluster::scratch("reviews")
            .local_auth(Auth::Trust)
            .host_auth(Auth::Trust)
            .start()
            .unwrap_or_else(|e| panic!("{e}"));
        Cluster {
            port: kit.port,
            kit,
        }
    }

    pub fn config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.port)
            .user(self.kit.superuser())
            .dbname("postgres");
        config
    }
}
