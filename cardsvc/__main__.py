from cardsvc.cli import main

main()
