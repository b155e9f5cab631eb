from rmt.cli import main

main()
