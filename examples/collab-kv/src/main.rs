//! Runs the collaborative-map demo against a running Folio (for example `folio dev`):
//!     cargo run -p collab-kv -- --addr 127.0.0.1:7070

use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Members' addresses, comma-separated.
    #[arg(long, default_value = "127.0.0.1:7070", value_delimiter = ',')]
    addr: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let r = collab_kv::demo(args.addr).await?;
    println!("alice sets title, bob sets color, concurrently:");
    println!(
        "  alice: {:?}\n  bob:   {:?}  (different pages: rebased, no conflict)",
        r.disjoint.0, r.disjoint.1
    );
    println!("alice and bob both set title, concurrently:");
    println!(
        "  alice: {:?}\n  bob:   {:?}  (same page: reported; bob re-applied on fresh state)",
        r.overlapping.0, r.overlapping.1
    );
    println!(
        "final: title = {:?}, color = {:?}",
        r.final_title, r.final_color
    );
    Ok(())
}
