//! `collab-todo`: a shared todo list in SQLite on a Folio volume. Run `watch` in one terminal
//! and `add` / `done` in others, on any node of the group.

use std::time::Duration;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "A shared todo list in SQLite on a Folio volume")]
struct Args {
    /// A group's members (comma-separated; any one will do).
    #[arg(long, env = "FOLIO_ADDR", default_value = "127.0.0.1:7070")]
    addr: String,
    /// The volume holding the list (32 hex digits); created on first use.
    #[arg(
        long,
        env = "TODO_VOLUME",
        default_value = "70d0000000000000000000000000c011"
    )]
    volume: String,
    /// Who is editing (shown beside each item).
    #[arg(long, default_value = "me")]
    who: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Add items.
    Add { titles: Vec<String> },
    /// Mark an item done.
    Done { id: i64 },
    /// Print the list.
    List,
    /// Print the list again whenever anyone changes it, for `--seconds` (default: a minute).
    Watch {
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn print(items: &[collab_todo::Item]) {
    for i in items {
        let mark = if i.done { "x" } else { " " };
        println!("[{mark}] {:>3} {} ({})", i.id, i.title, i.who);
    }
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let mode = if matches!(a.cmd, Cmd::Watch { .. }) {
        "sync=follow"
    } else {
        "sync=begin"
    };
    let db = collab_todo::open(&a.volume, &format!("addr={}&{mode}", a.addr))?;
    match a.cmd {
        Cmd::Add { titles } => {
            for t in titles {
                let (id, attempts) = collab_todo::add(&db, &a.who, &t)?;
                println!(
                    "added {id} ({attempts} attempt{})",
                    if attempts == 1 { "" } else { "s" }
                );
            }
        }
        Cmd::Done { id } => {
            if !collab_todo::done(&db, id)? {
                anyhow::bail!("no item {id}");
            }
        }
        Cmd::List => print(&collab_todo::list(&db)?),
        Cmd::Watch { seconds } => {
            let end = std::time::Instant::now() + Duration::from_secs(seconds);
            let mut seen = None;
            while std::time::Instant::now() < end {
                // The background watch moves the view; the list is re-read only when it moved.
                let lsn = collab_todo::lsn(&db)?;
                if seen != Some(lsn) {
                    println!("--- at LSN {lsn}");
                    print(&collab_todo::list(&db)?);
                    seen = Some(lsn);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(())
}
