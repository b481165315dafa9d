from cardsvc.agent.cli import main

main()
